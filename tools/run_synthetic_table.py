"""The README's fusion table on the synthetic corpus: every fusion type over several seeds.

    python tools/run_synthetic_table.py --out runs/table [--seeds 0,1,2] [--fusions audio,...]
        [--config.train.num_steps=300 ...]

Trains experiments/synthetic_<fusion>.py once per (fusion, seed) into OUT/<fusion>-s<seed>
(a finished run is reused and an unfinished one resumed, both only if made with the same
settings), then writes OUT/table.md and OUT/table.json with the mean and standard deviation of
validation and test WA / UA.
"""

import argparse
import json
import os
import sys

import numpy as np

from avfbp_jax.models.config import FUSION_TYPES
from avfbp_jax.train import checkpoint, report
from avfbp_jax.train.config import RunSetupError
from avfbp_jax.train.loop import METRICS_FILE, train_and_evaluate
from avfbp_jax.train.main import apply_overrides, load_config_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_one(fusion: str, seed: int, workdir: str, overrides: list[str]) -> dict:
    """metrics.json of one finished run (trained now unless it already finished)."""
    path = os.path.join(workdir, METRICS_FILE)
    config = load_config_file(os.path.join(REPO, "experiments", f"synthetic_{fusion}.py"))
    apply_overrides(config, overrides)
    config.seed = seed
    if os.path.exists(path):
        checkpoint.check_same_run(workdir, config)  # never reuse a run made with other settings
        with open(path) as f:
            done = json.load(f)
        if done.get("step") == config.train.num_steps:
            return done
    train_and_evaluate(config, workdir)
    with open(path) as f:
        return json.load(f)


def summarise(results: dict[str, list[dict]]) -> dict:
    table = {}
    for fusion, runs in results.items():
        row = {"seeds": len(runs)}
        for split in ("val", "test"):
            for key in ("wa", "ua"):
                values = np.array([100 * r[split][key] for r in runs])
                row[f"{split}_{key}"] = {"mean": float(values.mean()), "std": float(values.std()),
                                         "values": values.tolist()}
        row["train_time_s"] = float(np.mean([r["train_time_s"] for r in runs]))
        table[fusion] = row
    return table


def markdown(table: dict, command: str) -> str:
    lines = ["| fusion | val WA | val UA | test WA | test UA | train s |",
             "|---|---|---|---|---|---|"]
    for fusion, row in table.items():
        cells = [f"{row[k]['mean']:.1f} ± {row[k]['std']:.1f}"
                 for k in ("val_wa", "val_ua", "test_wa", "test_ua")]
        lines.append(f"| {fusion} | " + " | ".join(cells) + f" | {row['train_time_s']:.0f} |")
    seeds = max(row["seeds"] for row in table.values())
    lines.append("")
    lines.append(f"Mean ± standard deviation over {seeds} seed(s), accuracy in %. Reproduce with "
                 f"`{command}`.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/table")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--fusions", default=",".join(FUSION_TYPES))
    args, overrides = parser.parse_known_args(argv)
    bad = [o for o in overrides if not o.startswith("--config.")]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    fusions = [f for f in args.fusions.split(",") if f]
    results = {}
    for fusion in fusions:
        for seed in seeds:
            print(f"=== {fusion}, seed {seed} ===", flush=True)
            workdir = os.path.join(args.out, f"{fusion}-s{seed}")
            try:
                results.setdefault(fusion, []).append(run_one(fusion, seed, workdir, overrides))
            except RunSetupError as e:
                print(f"run_synthetic_table: error: {e}", file=sys.stderr)
                return 2
    table = summarise(results)
    command = "python tools/run_synthetic_table.py " + " ".join(sys.argv[1:] if argv is None
                                                                  else argv)
    os.makedirs(args.out, exist_ok=True)
    report.write_json(os.path.join(args.out, "table.json"), table)
    text = markdown(table, command.strip())
    report.write_text(os.path.join(args.out, "table.md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
