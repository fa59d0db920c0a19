"""Parameter counts and jitted forward-pass time of the paper-sized model, per fusion type.

For each fusion type: the number of parameters of the default model (avfbp_jax.models.config),
the time to compile one jitted eval-mode forward pass, and its run time at --batch recordings of
--seconds of audio and --frames face crops (median over interleaved rounds after warm-up; see
bench_common). Compile time is measured separately and not part of the run time.

  python3 -m tools.forward_time --out /tmp/forward_time.json
  python3 -m tools.forward_time --quick      # the tiny test model: a smoke run in seconds
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np

from avfbp_jax import atomic
from avfbp_jax.models.config import FUSION_TYPES, model_config, tiny_model_config
from avfbp_jax.models.model import AVModel, example_batch
from tools import bench_common as bc


def count_params(tree) -> int:
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))


def build(fusion: str, *, dtype: str, batch_size: int, seconds: float, frames: int,
          quick: bool):
    """(jitted forward compiled for the batch, variables, batch, param count, compile seconds)."""
    cfg = tiny_model_config(fusion) if quick else model_config()
    cfg.fusion = fusion
    cfg.dtype = dtype
    model = AVModel(cfg)
    batch = jax.device_put(example_batch(cfg, batch_size, seconds, frames))
    keys = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}
    variables = jax.jit(lambda b: model.init(keys, b, train=False))(batch)
    forward = jax.jit(lambda v, b: model.apply(v, b, train=False))
    start = time.perf_counter()
    compiled = forward.lower(variables, batch).compile()
    compile_s = time.perf_counter() - start
    return compiled, variables, batch, count_params(variables), compile_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--fusion", default=",".join(FUSION_TYPES),
                        help="comma-separated fusion types")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="tiny model, few rounds")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds = 2

    rows, variants = [], []
    for fusion in args.fusion.split(","):
        compiled, variables, batch, params, compile_s = build(
            fusion, dtype=args.dtype, batch_size=args.batch, seconds=args.seconds,
            frames=args.frames, quick=args.quick)
        rows.append({"fusion": fusion, "params": params, "compile_s": compile_s})
        variants.append(bc.Variant(fusion, lambda c=compiled, v=variables, b=batch: c(v, b)))
    timings = bc.time_interleaved(variants, rounds=args.rounds, warmup=2, target_s=0.0)
    for row in rows:
        t = timings[row["fusion"]]
        row.update(forward_ms=1e3 * t.median, iqr_ms=1e3 * (t.p75 - t.p25),
                   timing=t.as_dict())

    info = bc.machine_info()
    print(f"# {bc.describe_machine(info)}")
    print(f"# batch {args.batch}, {args.seconds:g} s audio, {args.frames} frames, {args.dtype}"
          f"{', QUICK (tiny model)' if args.quick else ''}; median of {args.rounds} rounds")
    print(bc.format_table(rows, [("fusion", "fusion", ""), ("params", "params", ","),
                                 ("compile_s", "compile s", ".1f"),
                                 ("forward_ms", "forward ms", ".1f"), ("iqr_ms", "IQR ms", ".1f")]))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        atomic.write_json(args.out, {"machine": info, "args": vars(args), "rows": rows},
                          default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
