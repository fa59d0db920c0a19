"""Benchmark of the bilinear fusion family (FBP, MFH, MCB, TFN, LMF, ...; issue 22).

For each member, dtype and batch it times, interleaved in rounds on one device:

  ours           the model's own module (avfbp_jax.models.fusion.fusion_op, the settings of the
                 model config: model.fusion_ops and fbp_k / fbp_o), jitted, deterministic
  floor          the member's unavoidable GEMMs (MCB: and its FFT convolution) alone in XLA at
                 the same shapes and dtype (tools/fusion_bench/members.py)
  torch          its PyTorch reference transcription on the same parameters, eager (bf16 by
                 autocast), on CUDA when torch sees a GPU
  torch.compile  the same under torch.compile

each forward only ("fwd") and forward+backward ("fwd+bwd": value and gradient of sum(out * g), g a
fixed random cotangent, w.r.t. the inputs and all parameters), with the physical floor
max(FLOPs / GEMM peak, bytes / copy bandwidth) beside every row (peak and bandwidth timed in the
same rounds). Before timing, every variant's output and gradients are compared with the twin's
float32 eager result on the same inputs: one that disagrees is not timed (the run stops).

Sizes: the inputs of block.bootstrap.pytorch's VQA fusions, 4800 (question) x 2048 (image
region) (tools/fusion_bench/members.py cites them), the members' settings of model_config();
batch 16 on a CPU by default, 2304 (one VQA batch of the attention fusion) and 8192 on an
accelerator.

  python3 -m tools.bench_fusion --out /tmp/bench_fusion.json
  python3 -m tools.bench_fusion --quick --out /tmp/q.json      # tiny sizes, seconds

The library is tools/fusion_bench/ (`run_benchmark` in sweep.py; the device suite calls it too).
"""

from __future__ import annotations

import argparse
import os
import sys

import jax

from avfbp_jax import atomic
from avfbp_jax.models.config import model_config, tiny_model_config
from tools import bench_common as bc
from tools.fusion_bench import REFERENCE_INPUTS
from tools.fusion_bench.agreement import Disagreement
from tools.fusion_bench.report import report
from tools.fusion_bench.sweep import FAMILY, MODES, run_benchmark

QUICK_INPUTS = (24, 16)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--members", default=",".join(FAMILY))
    p.add_argument("--batches", default=None,
                   help="comma-separated (default: 16 on a CPU, 2304,8192 on an accelerator)")
    p.add_argument("--inputs", default="{}:{}".format(*REFERENCE_INPUTS),
                   help="m:n, the two inputs' sizes")
    p.add_argument("--dtypes", default="f32")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--target-ms", type=float, default=50.0, help="time per sample (reps/sample)")
    p.add_argument("--gemm-size", type=int, default=None,
                   help="side of the peak GEMM (default 1024 on a CPU, 8192 on accelerators)")
    p.add_argument("--no-torch", action="store_true", help="no twins (and no check)")
    p.add_argument("--no-torch-compile", action="store_true")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes (tiny_model_config, inputs 24:16, batch 8, f32 and bf16)")
    p.add_argument("--out", required=True, help="JSON output path")
    if p.parse_known_args(argv)[0].quick:  # presets; flags given explicitly still win
        p.set_defaults(batches="8", inputs="{}:{}".format(*QUICK_INPUTS), target_ms=5.0,
                       gemm_size=128, dtypes="f32,bf16")
    args = p.parse_args(argv)
    batches = args.batches or ("16" if jax.default_backend() == "cpu" else "2304,8192")
    try:
        m, n = bc.parse_ints(args.inputs.replace(":", ","))
    except ValueError:
        raise SystemExit(f"--inputs: expected m:n, got {args.inputs!r}") from None
    cfg = tiny_model_config() if args.quick else model_config()
    split = lambda text: [t for t in text.split(",") if t]
    try:
        result = run_benchmark(
            cfg, split(args.members), (m, n), bc.parse_ints(batches), split(args.dtypes),
            split(args.modes), rounds=args.rounds, warmup=args.warmup,
            target_ms=args.target_ms, gemm_size=args.gemm_size, use_torch=not args.no_torch,
            torch_compile=not args.no_torch_compile, log=lambda s: print(s, flush=True))
    except Disagreement as e:
        raise SystemExit(f"refused: {e}") from None
    except ValueError as e:
        raise SystemExit(f"--{e}") from None
    result["argv"] = sys.argv[1:] if argv is None else list(argv)
    print(report(result))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    atomic.write_json(args.out, result, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
