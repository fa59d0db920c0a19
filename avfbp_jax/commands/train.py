"""`avfbp train --config experiments/NAME.py[:VARIANT] --workdir DIR [--config.FIELD=VALUE ...]`.

The config is the experiment file's get_config() (get_config(VARIANT) with `:VARIANT`) with the
`--config.FIELD=VALUE` (or `--config.FIELD VALUE`) overrides applied, parsed by
ml_collections.config_flags (see train.experiment), and validated before any work starts.
Rerunning the same command continues from the workdir's latest checkpoint. `--all-folds` runs
the five IEMOCAP leave-one-session-out folds (data.test_session = 1..5) into DIR/fold1..fold5
and writes their mean and spread to DIR/folds.json.
"""

import argparse
import sys

from avfbp_jax.train.config import RunSetupError, validate
from avfbp_jax.train.experiment import apply_overrides, load_config_file

TAKES_CONFIG_OVERRIDES = True  # commands.cli passes the arguments it does not know as args.extra


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE[:VARIANT]",
                        help="experiment file with get_config(); FILE:VARIANT calls "
                             "get_config(VARIANT), e.g. experiments/synthetic.py:gfbp")
    parser.add_argument("--workdir", required=True, help="checkpoints, metrics and plots go here")
    parser.add_argument("--all-folds", action="store_true",
                        help="IEMOCAP: run the 5 leave-one-session-out folds into WORKDIR/foldK")
    parser.epilog = ("Any config field is overridable: --config.FIELD=VALUE or --config.FIELD "
                     "VALUE, e.g. --config.train.num_steps=500 (ml_collections.config_flags).")


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config_file(args.config)
        apply_overrides(config, getattr(args, "extra", []))
        validate(config)
    except (FileNotFoundError, KeyError, ValueError) as e:  # RunSetupError is a ValueError
        print(f"avfbp train: error: {e.args[0]}", file=sys.stderr)
        return 2

    import jax

    from avfbp_jax.train.folds import train_all_folds
    from avfbp_jax.train.loop import NonFiniteLossError, train_and_evaluate

    try:
        if not args.all_folds:
            train_and_evaluate(config, args.workdir)
            return 0
        summary = train_all_folds(config, args.workdir)
        if jax.process_index() == 0:
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
