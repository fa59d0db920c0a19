"""Benchmark of the factorized bilinear pooling kernel (avfbp_jax.ops.fbp), design brief §6.

For each dims (m, n, k, o), dtype and batch size it times, interleaved in rounds on one device,
the variants of the implementations asked for (`impls`):

  floor          the two projection GEMMs alone (x W_x, y W_y; no bias) in XLA, same precision and
                 float32 accumulation as the kernel: the cost FBP cannot go below with XLA's GEMMs
  floor:torch    the same GEMMs in PyTorch (torch.mm into preallocated outputs), and
  floor:numpy    in numpy (CPU, f32): the machine's GEMM ceiling at the kernel's shapes
  fbp            avfbp_jax.ops.fbp, jitted (dropout off)                              impl "xla"
  fbp+dropout    the same with dropout 0.1 on the product (fwd+bwd only: training)    impl "xla"
  pallas         avfbp_jax.ops.fbp_pallas; fwd+bwd once per residual strategy
                 (pallas:recompute, pallas:keep). Not timed on CPU, where Pallas only runs in
                 interpret mode (not a speed), unless forced
  mosaic         avfbp_jax.ops.fbp_mosaic, the same kernel on Mosaic GPU (jax >= 0.11, Hopper);
                 run once first: if it fails, a note says why and the sweep goes on; the note
                 also gives its forward's difference from fbp. Not timed on CPU unless forced
  torch          a PyTorch twin of the kernel (same math, eager), on CUDA when torch sees a GPU
  torch.compile  the twin under torch.compile                                         impl "torch"
  naive          unfactorized bilinear z_j = x^T W_j y with an explicit W (o, m, n); only where
                 the estimated memory and time fit (naive_max_gb, naive_max_s)

each forward only ("fwd") and forward+backward ("fwd+bwd": value and gradient of the scalar
loss sum(out * g), g a fixed random cotangent, w.r.t. the inputs and all parameters; the GEMM
floors run their 2 or 6 GEMMs). Inputs are random normal; where one shape's inputs fit in 64 MiB
(a cache could hold them) the calls rotate over enough copies to exceed 128 MiB.
FLOPs (2 per multiply-add, GEMMs only) and bytes (the least any implementation must move) are
counted as tools/fbp_bench/counts.py says.

Every row has its physical floor beside it: max(FLOPs / GEMM peak, bytes / memory bandwidth), with
the GEMM peak the fastest GEMM of that dtype in the same rounds (a large square GEMM in XLA, torch
or numpy, or one of the floors at the kernel's shapes) and the bandwidth a large device-to-device
copy (jax on accelerators, numpy on CPU), all timed in the same rounds as that shape's variants so
that machine load hits them alike. One more call of each variant counts its minor page faults and
host CPU time (all threads), which load from other processes barely changes.

  python3 -m tools.bench_fbp --out /tmp/bench_fbp.json [--plot /tmp/bench_fbp.png]
  python3 -m tools.bench_fbp --quick --out /tmp/q.json      # tiny sweep, seconds

The library is tools/fbp_bench/ (`run_benchmark` in sweep.py; the device suite calls it too).
"""

from __future__ import annotations

import argparse
import os
import sys

from avfbp_jax import atomic
from tools import bench_common as bc
from tools.fbp_bench.counts import Dims
from tools.fbp_bench.report import plot, report
from tools.fbp_bench.sweep import IMPLS, run_benchmark


def parse_dims(text: str) -> list[Dims]:
    """'512:512:5:1000,128:128:5:100' -> [(512, 512, 5, 1000), (128, 128, 5, 100)]."""
    out = []
    for item in text.split(","):
        parts = tuple(int(p) for p in item.split(":"))
        if len(parts) != 4:
            raise SystemExit(f"--dims: expected m:n:k:o items, got {item!r}")
        out.append(parts)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", default="64,256,1024,4096,8192")
    p.add_argument("--dims", default="512:512:5:1000,128:128:5:100",
                   help="comma-separated m:n:k:o cases (default: MFB size and a small case)")
    p.add_argument("--dtypes", default="f32,bf16")
    p.add_argument("--modes", default="fwd,fwd+bwd")
    p.add_argument("--impls", default=",".join(IMPLS), help=f"subset of {','.join(IMPLS)}")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--target-ms", type=float, default=50.0, help="time per sample (reps/sample)")
    p.add_argument("--gemm-size", type=int, default=None,
                   help="side of the peak GEMM (default 2048 on CPU, 8192 on accelerators)")
    p.add_argument("--naive-max-gb", type=float, default=None,
                   help="memory limit for the naive layer (default: a quarter of free memory)")
    p.add_argument("--naive-max-s", type=float, default=1.0,
                   help="skip the naive layer where one call would take longer (at GEMM peak)")
    p.add_argument("--no-naive", action="store_true", help="same as leaving naive out of --impls")
    p.add_argument("--no-torch", action="store_true", help="same as leaving torch out of --impls")
    p.add_argument("--no-torch-compile", action="store_true")
    p.add_argument("--force-pallas", action="store_true",
                   help="time the Pallas kernels (pallas, mosaic) on CPU too (interpret mode: "
                        "not a speed)")
    p.add_argument("--quick", action="store_true",
                   help="tiny sweep (small dims, batches 8 and 32, 3 rounds) for smoke tests")
    p.add_argument("--out", required=True, help="JSON output path")
    p.add_argument("--plot", default=None, help="PNG output path (samples/s against batch)")
    if p.parse_known_args(argv)[0].quick:  # presets; flags given explicitly still win
        p.set_defaults(batches="8,32", dims="32:24:5:16", rounds=3, warmup=1, target_ms=5.0,
                       gemm_size=256)
    args = p.parse_args(argv)
    impls = [i for i in args.impls.split(",") if i
             and not (args.no_naive and i == "naive") and not (args.no_torch and i == "torch")]
    try:
        result = run_benchmark(
            parse_dims(args.dims), bc.parse_ints(args.batches),
            [d for d in args.dtypes.split(",") if d], [m for m in args.modes.split(",") if m],
            impls, rounds=args.rounds, warmup=args.warmup, target_ms=args.target_ms,
            gemm_size=args.gemm_size, torch_compile=not args.no_torch_compile,
            force_pallas=args.force_pallas, naive_max_gb=args.naive_max_gb,
            naive_max_s=args.naive_max_s, log=lambda s: print(s, flush=True))
    except ValueError as e:
        raise SystemExit(f"--{e}") from None
    result["argv"] = sys.argv[1:] if argv is None else list(argv)
    print(report(result))
    for path in filter(None, (args.out, args.plot)):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic.write_json(args.out, result, default=float)
    if args.plot:
        plot(result["rows"], args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
