"""A results table: every variant of an experiment file over several seeds.

    python3 -m tools.run_table --config experiments/synthetic.py \
        --variants audio,video,concat,late,gfbp,agfbp,amfbp --seeds 0,1,2 --out runs/table \
        [--config.FIELD=VALUE ...]

Trains get_config(VARIANT) of the --config file (variants are free strings passed to it) once per
(variant, seed) into OUT/<variant>-s<seed>, with the overrides applied and config.seed set (a
finished run is reused and an unfinished one resumed, both only if made with the same settings),
then writes OUT/table.md and OUT/table.json with the mean and standard deviation of validation
and test WA / UA over the seeds, the model's trainable parameter count (read from the first seed's
checkpoint; frozen parts such as MCB's sketches and a pretrained encoder left out) and the mean
training time and train-step samples/s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import jax
import ml_collections
import numpy as np

from avfbp_jax import atomic
from avfbp_jax.models.model import frozen_paths
from avfbp_jax.train import checkpoint, optimizer
from avfbp_jax.train.config import RunSetupError
from avfbp_jax.train.experiment import apply_overrides, load_config_file
from avfbp_jax.train.loop import METRICS_FILE, train_and_evaluate


def run_one(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """metrics.json of one finished run of config in workdir (trained now unless it finished)."""
    path = os.path.join(workdir, METRICS_FILE)
    if os.path.exists(path):
        checkpoint.check_same_run(workdir, config)  # never reuse a run made with other settings
        with open(path) as f:
            done = json.load(f)
        if done.get("step") == config.train.num_steps:
            return done
    train_and_evaluate(config, workdir)
    with open(path) as f:
        return json.load(f)


def trainable_params(workdir: str) -> int:
    """Trainable parameters of the model saved in workdir (its frozen paths left out)."""
    params, config = checkpoint.load_for_inference(workdir)
    labels = optimizer.trainable_labels(params, (*config.train.frozen,
                                                 *frozen_paths(config.model)))
    return int(sum(np.size(p) for p, label in zip(jax.tree.leaves(params),
                                                  jax.tree.leaves(labels))
                   if label == "trainable"))


def summarise(results: dict[str, list[dict[str, Any]]], params: dict[str, int]
              ) -> dict[str, Any]:
    """Per variant: mean, standard deviation and values (in %) of val/test WA/UA over its runs,
    its parameter count, and the mean training time and train-step samples/s."""
    table = {}
    for variant, runs in results.items():
        row: dict[str, Any] = {"seeds": len(runs), "params": params[variant]}
        for split in ("val", "test"):
            for key in ("wa", "ua"):
                values = np.array([100 * r[split][key] for r in runs])
                row[f"{split}_{key}"] = {"mean": float(values.mean()), "std": float(values.std()),
                                         "values": values.tolist()}
        row["train_time_s"] = float(np.mean([r["train_time_s"] for r in runs]))
        row["samples_per_s"] = float(np.mean([r["throughput"]["samples_per_s"] for r in runs]))
        table[variant] = row
    return table


def markdown(table: dict[str, Any], command: str) -> str:
    lines = ["| variant | val WA | val UA | test WA | test UA | params | train s | samples/s |",
             "|---|---|---|---|---|---|---|---|"]
    for variant, row in table.items():
        cells = [f"{row[k]['mean']:.1f} ± {row[k]['std']:.1f}"
                 for k in ("val_wa", "val_ua", "test_wa", "test_ua")]
        cells += [f"{row['params']:,}", f"{row['train_time_s']:.0f}",
                  f"{row['samples_per_s']:.1f}"]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    seeds = max(row["seeds"] for row in table.values())
    lines.append("")
    lines.append(f"Mean ± standard deviation over {seeds} seed(s), accuracy in %. Reproduce with "
                 f"`{command}`.")
    return "\n".join(lines) + "\n"


def _load(path: str, overrides: list[str]) -> ml_collections.ConfigDict:
    """get_config() of PATH:VARIANT with the `--config.FIELD=VALUE` overrides applied."""
    config = load_config_file(path)
    apply_overrides(config, overrides)
    return config


def _list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True,
                        help="experiment file whose get_config(VARIANT) gives each variant")
    parser.add_argument("--variants", required=True, help="comma-separated get_config arguments")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--out", required=True, help="one run folder per (variant, seed), tables")
    args, overrides = parser.parse_known_args(argv)
    bad = [o for o in overrides if not o.startswith("--config.")]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    variants = _list(args.variants)
    if not variants or any(os.sep in v for v in variants):
        parser.error(f"--variants: expected names without {os.sep!r}, got {args.variants!r}")
    try:
        seeds = [int(s) for s in _list(args.seeds)]
    except ValueError:
        parser.error(f"--seeds: expected comma-separated integers, got {args.seeds!r}")
    try:  # every variant's config first: a bad variant or override fails before any training
        for v in variants:
            _load(f"{args.config}:{v}", overrides)
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"run_table: error: {e}", file=sys.stderr)
        return 2
    results: dict[str, list[dict[str, Any]]] = {}
    params: dict[str, int] = {}
    for variant in variants:
        for seed in seeds:
            print(f"=== {variant}, seed {seed} ===", flush=True)
            config = _load(f"{args.config}:{variant}", overrides)
            config.seed = seed
            workdir = os.path.join(args.out, f"{variant}-s{seed}")
            try:
                results.setdefault(variant, []).append(run_one(config, workdir))
            except RunSetupError as e:
                print(f"run_table: error: {e}", file=sys.stderr)
                return 2
            if variant not in params:
                params[variant] = trainable_params(workdir)
    table = summarise(results, params)
    os.makedirs(args.out, exist_ok=True)
    atomic.write_json(os.path.join(args.out, "table.json"), table, indent=2, sort_keys=True)
    text = markdown(table, " ".join(["python3 -m tools.run_table", *argv]))
    atomic.write_text(os.path.join(args.out, "table.md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
