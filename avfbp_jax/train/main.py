"""`avfbp train --config experiments/NAME.py --workdir DIR [--config.FIELD=VALUE ...]`.

Rerunning the same command continues from the workdir's latest checkpoint. `--all-folds` runs
the five IEMOCAP leave-one-session-out folds (data.test_session = 1..5) into DIR/fold1..fold5
and writes their mean and spread to DIR/folds.json.
"""

import argparse
import ast
import importlib.util
import os
import sys

import ml_collections
import numpy as np

from avfbp_jax.train import report

NUM_FOLDS = 5


def load_config_file(path: str) -> ml_collections.ConfigDict:
    """Calls get_config() of an experiment file (`path` or `path:ARG` for get_config(ARG))."""
    path, _, arg = path.partition(":")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such experiment config file")
    spec = importlib.util.spec_from_file_location(f"avfbp_experiment_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"{path}: an experiment config file must define get_config()")
    return module.get_config(arg) if arg else module.get_config()


def _parse_value(text: str, current, name: str):
    """`text` converted to the type of the field's current value."""
    if isinstance(current, bool):
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"--config.{name}: expected true or false, got {text!r}")
    if isinstance(current, str):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if current is None:
            return text
        if isinstance(current, tuple | list):
            return tuple(v.strip() for v in text.split(",") if v.strip())
        raise ValueError(f"--config.{name}: cannot parse {text!r}") from None
    if isinstance(current, float) and isinstance(value, int):
        return float(value)
    if isinstance(current, tuple | list):
        value = tuple(value) if isinstance(value, tuple | list) else (value,)
    elif current is not None and not isinstance(value, type(current)):
        raise ValueError(f"--config.{name}: expected {type(current).__name__}, got {text!r}")
    return value


def apply_overrides(config: ml_collections.ConfigDict, overrides: list[str]) -> None:
    """Applies `config.a.b=value` (or `--config.a.b=value`) strings in place."""
    for item in overrides:
        key, sep, text = item.lstrip("-").partition("=")
        if not sep or not key.startswith("config."):
            raise ValueError(f"override {item!r}: expected --config.FIELD=VALUE")
        path = key[len("config."):].split(".")
        node = config
        for part in path[:-1]:
            if part not in node:
                raise KeyError(f"override {item!r}: config has no field {part!r}")
            node = node[part]
        if path[-1] not in node:
            raise KeyError(f"override {item!r}: config has no field {'.'.join(path)!r} "
                           f"(fields here: {', '.join(sorted(node.keys()))})")
        node[path[-1]] = _parse_value(text, node[path[-1]], ".".join(path))


TAKES_CONFIG_OVERRIDES = True  # cli.py passes --config.FIELD=VALUE arguments as args.extra


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="experiment file with get_config()")
    parser.add_argument("--workdir", required=True, help="checkpoints, metrics and plots go here")
    parser.add_argument("--all-folds", action="store_true",
                        help="IEMOCAP: run the 5 leave-one-session-out folds into WORKDIR/foldK")
    parser.add_argument("overrides", nargs="*", default=[], metavar="config.FIELD=VALUE",
                        help="config overrides (also accepted as --config.FIELD=VALUE)")


def aggregate_folds(results: list[dict]) -> dict:
    """Mean and standard deviation of WA, UA and macro-F1 over folds' test results."""
    out = {"folds": results}
    for key in ("wa", "ua", "macro_f1"):
        values = np.array([r["test"][key] for r in results])
        out[key] = {"mean": float(values.mean()), "std": float(values.std()),
                    "per_fold": values.tolist()}
    return out


def run(args: argparse.Namespace) -> int:
    import jax

    from avfbp_jax.train.config import RunSetupError
    from avfbp_jax.train.loop import NonFiniteLossError, train_and_evaluate

    try:
        config = load_config_file(args.config)
        apply_overrides(config, list(args.overrides) + list(getattr(args, "extra", [])))
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"avfbp train: error: {e}", file=sys.stderr)
        return 2
    try:
        if not args.all_folds:
            train_and_evaluate(config, args.workdir)
            return 0
        results = []
        for fold in range(1, NUM_FOLDS + 1):
            fold_config = ml_collections.ConfigDict(config.to_dict())
            fold_config.data.test_session = fold
            print(f"=== fold {fold}/{NUM_FOLDS}: test session {fold} ===", flush=True)
            fold_dir = os.path.join(args.workdir, f"fold{fold}")
            results.append(train_and_evaluate(fold_config, fold_dir))
        summary = aggregate_folds(results)
        if jax.process_index() == 0:
            report.write_json(os.path.join(args.workdir, "folds.json"), summary)
            print("leave-one-session-out: " + ", ".join(
                f"{k.upper()} {100 * summary[k]['mean']:.2f} +- {100 * summary[k]['std']:.2f}"
                for k in ("wa", "ua", "macro_f1")))
        return 0
    except RunSetupError as e:
        print(f"avfbp train: error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLossError as e:
        print(f"\navfbp train: error: {e}", file=sys.stderr)
        return 3


def main(argv: list[str] | None = None) -> int:
    """`python -m avfbp_jax.train.main ...`, the same as `avfbp train ...`."""
    from avfbp_jax import cli

    return cli.main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
