"""Benchmark of the whole jitted train step (avfbp_jax.train.step), design brief §6.

Sections (each printed as a table and written to the JSON):
  step      samples/s of the train step for each fusion type, batch size, dtype and device
            count (all visible devices, and 1), after compilation; compile time (lower +
            compile) separately; model FLOPs per sample from XLA's cost analysis of the compiled
            step (per-device program x devices / global batch: forward, backward and optimizer);
            utilisation = achieved FLOP/s over the GEMM peak of one device (a large same-dtype
            GEMM timed in the same rounds) times the device count.
  length    step time against audio length (1, 3, 6, 12 s, frames following at `fps`), and
            against the number of frames at a fixed audio length, for G-FBP and AM-FBP; the
            AM-FBP / G-FBP ratio of time and of FLOPs (AM-FBP re-pools the streams per trunk, it
            must not re-run the convolutions).
  loader    TrainLoader throughput over a feature cache at each batch size, the packed cache
            read into memory and memory-mapped (cold: first pass, warm: --loader-seconds after
            it; padding efficiency, bytes per sample), then the step's consumption on the
            loader's batches at the smallest batch (and the two in a loop); needs --cache, or
            --build-cache N clips.
  compiles  warm up the step on every bucket shape, then run the loader's (or bucket-shaped)
            batches through it and count XLA compilations (jax.monitoring): must be 0.
  twin      our AM-FBP step against its PyTorch twin's (tools/torch_twins: same parameters,
            batch, loss, AdamW, clipping and schedule), eager and under torch.compile
            (--twin-compile), for each --twin-widths x --batches x --dtypes (bf16: torch
            autocast for the twin); samples/s and time over ours (tools/train_bench/twin.py).

Variants are timed in interleaved rounds (see tools/bench_common.py); report ratios.
The default widths are small so that the CPU run finishes in minutes (--width scales the audio
FCN and the frame CNN); use --width 1 on an accelerator for the paper-sized model.

  python3 -m tools.bench_train --out /tmp/bench_train.json --cache /path/to/cache
  python3 -m tools.bench_train --sections loader --build-cache 96 --batches 32,64 --out l.json
  python3 -m tools.bench_train --quick --out /tmp/q.json    # tiny smoke run
  python3 -m tools.bench_train --sections twin --batches 8 --out /tmp/twin.json

The library is tools/train_bench/ (the device suite uses its step case and loader benchmark).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from typing import Any

import jax

from avfbp_jax import atomic
from avfbp_jax.data.config import data_config
from avfbp_jax.models.config import FUSION_TYPES
from avfbp_jax.train import parallel
from tools import bench_common as bc
from tools import synthetic_cache
from tools.train_bench.compiles import compiles_without_cache
from tools.train_bench.loader import cache_description, loader_rows, loader_vs_step
from tools.train_bench.report import plot, summary
from tools.train_bench.step_case import MODEL_DTYPES
from tools.train_bench.steps import bench_lengths, bench_steps
from tools.train_bench.twin import COMPILE_BACKENDS, bench_twin

SECTIONS = ("step", "length", "loader", "compiles", "twin")
COMPILE_KEYS = ("warmup_shapes", "compiles_after_warmup", "steps_after_warmup")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fusions", default=",".join(FUSION_TYPES))
    p.add_argument("--batches", default="8,32", help="global batch sizes")
    p.add_argument("--dtypes", default="f32,bf16")
    p.add_argument("--devices", default="all,1", help="device counts: 'all' and/or integers")
    p.add_argument("--width", type=float, default=None,
                   help="width multiplier of the audio FCN and frame CNN (default 0.125 on CPU,"
                        " 1 on accelerators)")
    p.add_argument("--seconds", type=float, default=3.0, help="audio length of the step sweep")
    p.add_argument("--fps", type=float, default=data_config().fps)
    p.add_argument("--lengths", default="1,3,6,12", help="audio seconds of the length sweep")
    p.add_argument("--frame-sweep", default="10,30,60,120",
                   help="frame counts at --seconds audio")
    p.add_argument("--buckets", default=",".join(map(str, data_config().buckets)),
                   help="loader buckets (seconds); each is one compiled shape")
    p.add_argument("--cache", default=None, help="feature cache for the loader section")
    p.add_argument("--build-cache", type=int, default=0, metavar="CLIPS",
                   help="build a synthetic cache of this many clips when --cache is not given")
    p.add_argument("--workers", type=int, default=2,
                   help="synth and prepare processes of --build-cache")
    p.add_argument("--loader-seconds", type=float, default=3.0,
                   help="warm measuring time of the loader per batch size and cache mode")
    p.add_argument("--loader-batches", type=int, default=8,
                   help="loader batches the step runs on (and the loop's length)")
    p.add_argument("--twin-widths", default=None,
                   help="widths of the twin section (default: --width's, then 1, the paper's)")
    p.add_argument("--twin-compile", default="inductor", choices=COMPILE_BACKENDS,
                   help="torch.compile backend of the twin ('none': eager twin only)")
    p.add_argument("--sections", default=",".join(SECTIONS))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--gemm-size", type=int, default=None)
    p.add_argument("--quick", action="store_true",
                   help="tiny smoke run: 2 fusions, batch 8, 1 s audio, tiny widths, 2 rounds")
    p.add_argument("--out", required=True, help="JSON output path")
    p.add_argument("--plot", default=None, help="PNG: step time against audio length")
    return p


def _choose(text: str, allowed, flag: str) -> list[str]:
    got = [t for t in text.split(",") if t]
    if not got or set(got) - set(allowed):
        raise SystemExit(f"{flag}: choose from {tuple(allowed)}")
    return got


def main(argv: list[str] | None = None) -> int:
    p = parser()
    if p.parse_known_args(argv)[0].quick:  # presets; flags given explicitly still win
        p.set_defaults(fusions="gfbp,amfbp", batches="8", dtypes="f32", seconds=1.0,
                       lengths="1,2", frame_sweep="5,10", buckets="1,2", rounds=2, warmup=1,
                       loader_batches=2, loader_seconds=0.5, width=0.03, gemm_size=256,
                       twin_widths="0.03")
    args = p.parse_args(argv)
    backend = jax.default_backend()
    width = args.width or (0.125 if backend == "cpu" else 1.0)
    gemm_size = args.gemm_size or (2048 if backend == "cpu" else 8192)
    fusions = _choose(args.fusions, FUSION_TYPES, "--fusions")
    dtypes = _choose(args.dtypes, MODEL_DTYPES, "--dtypes")
    sections = _choose(args.sections, SECTIONS, "--sections")
    batches = bc.parse_ints(args.batches)
    buckets = [float(s) for s in args.buckets.split(",") if s]
    timing = {"rounds": args.rounds, "warmup": args.warmup}

    counts = sorted({jax.device_count() if d == "all" else int(d)
                     for d in args.devices.split(",") if d}, reverse=True)
    meshes = {n: parallel.make_mesh(n) for n in counts}
    one = meshes[counts[-1]]  # the fewest devices asked for
    counter = bc.CompileCounter()
    info = bc.machine_info()
    print(f"# bench_train on {bc.describe_machine(info)}; width {width}", flush=True)
    result: dict[str, Any] = {"benchmark": "train", "machine": info,
                              "argv": sys.argv[1:] if argv is None else list(argv),
                              "width": width, "gemm_size": gemm_size, "notes": []}
    if "step" in sections:
        result["step"] = bench_steps(
            meshes, fusions=fusions, dtypes=dtypes, batches=batches, width=width,
            seconds=args.seconds, frames=math.ceil(args.seconds * args.fps - 1e-6),
            gemm_size=gemm_size, **timing)
    if "length" in sections:
        result["length"] = bench_lengths(
            meshes.get(1, one), batch=min(batches), lengths=[float(s) for s in
                                                             args.lengths.split(",") if s],
            frame_sweep=bc.parse_ints(args.frame_sweep), fps=args.fps, seconds=args.seconds,
            width=width, **timing)
    if "loader" in sections and (args.cache or args.build_cache):
        with tempfile.TemporaryDirectory(prefix="bench_train_") as workdir:
            cache_dir = args.cache or synthetic_cache.build(workdir, args.build_cache,
                                                            workers=args.workers)
            rows = list(loader_rows(cache_dir, batches, args.loader_seconds, buckets))
            b = min(batches)
            loader = next(r for r in rows if r["in_memory"] and r["batch_size"] == b)
            result["loader"] = {
                **cache_description(cache_dir), "buckets": buckets,
                "seconds": args.loader_seconds, "rows": rows,
                **loader_vs_step(cache_dir, one, counter, batch=b, batches=args.loader_batches,
                                 buckets=buckets, width=width,
                                 loader_samples_per_s=loader["warm_samples_per_s"])}
        result["compiles"] = {k: result["loader"][k] for k in COMPILE_KEYS}
    elif "loader" in sections:
        result["notes"].append("loader: no --cache or --build-cache given; section skipped")
    if "compiles" in sections and "compiles" not in result:
        result["compiles"] = compiles_without_cache(one, counter, batch=min(batches),
                                                    buckets=buckets, fps=args.fps, width=width)

    if "twin" in sections:
        widths = ([float(w) for w in args.twin_widths.split(",") if w] if args.twin_widths
                  else list(dict.fromkeys([width, 1.0])))
        result["twin"] = bench_twin(
            parallel.make_mesh(1), widths=widths, dtypes=dtypes, batches=batches,
            seconds=args.seconds, frames=math.ceil(args.seconds * args.fps - 1e-6),
            compile_=args.twin_compile, notes=result["notes"], **timing)

    print(summary(result))
    for path in filter(None, (args.out, args.plot)):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic.write_json(args.out, result, default=float)
    if args.plot and "length" in result:
        plot(result["length"], args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
