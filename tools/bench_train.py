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
  loader    TrainLoader throughput over a feature cache against the step's consumption on the
            same batches (and the two in a loop); needs --cache, or --build-cache N clips.
  compiles  warm up the step on every bucket shape, then run the loader's (or bucket-shaped)
            batches through it and count XLA compilations (jax.monitoring): must be 0.

Variants are timed in interleaved rounds (see tools/bench_common.py); report ratios.
The default widths are small so that the CPU run finishes in minutes (--width scales the audio
FCN and the frame CNN); use --width 1 on an accelerator for the paper-sized model.

  python3 tools/bench_train.py --out /tmp/bench_train.json --cache /path/to/cache
  python3 tools/bench_train.py --quick --out /tmp/q.json    # tiny smoke run
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from typing import Any

import bench_common as bc
import jax
import numpy as np

from avfbp_jax import cli
from avfbp_jax.data.cache import FeatureCache, pcm16
from avfbp_jax.data.config import data_config
from avfbp_jax.data.loader import TrainLoader, bucket_shapes
from avfbp_jax.models.config import FUSION_TYPES, model_config
from avfbp_jax.models.model import AVModel, example_batch
from avfbp_jax.train import optimizer, parallel, perf
from avfbp_jax.train.config import train_config
from avfbp_jax.train.state import create_train_state
from avfbp_jax.train.step import make_train_step

MODEL_DTYPES = {"f32": "float32", "bf16": "bfloat16"}


def make_model_config(fusion: str, dtype: str, width: float, fbp_impl: str = "xla"):
    """model_config() with the fusion, compute dtype, width multiplier and FBP kernel applied."""
    cfg = model_config()
    cfg.fusion = fusion
    cfg.dtype = MODEL_DTYPES[dtype]
    cfg.fbp_impl = fbp_impl
    cfg.audio.width = cfg.audio.width * width
    cfg.video.cnn_channels = tuple(max(4, round(c * width)) for c in cfg.video.cnn_channels)
    return cfg


def device_bytes(mem: Any) -> int | None:
    """Device memory a compiled program needs by XLA's buffer assignment: arguments + outputs
    - donated (aliased) + temporaries + code; None where the backend reports no analysis."""
    if mem is None:
        return None
    return (mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
            + mem.temp_size_in_bytes + mem.generated_code_size_in_bytes)


class StepCase:
    """One compiled train step with its own state and a device-resident batch.

    Calling it runs one step (the state is donated and replaced) and returns the metrics. With
    aot=False nothing is compiled here (the jitted step compiles on first use).
    """

    def __init__(self, cfg, mesh, batch_size: int, seconds: float, frames: int,
                 aot: bool = True, state: Any = None):
        """state: a host copy of an initial state of this model (`self.initial`) to start from
        instead of initialising (which compiles the model's init)."""
        tcfg = train_config()
        model = AVModel(config=cfg)
        schedule = optimizer.make_schedule(tcfg)
        tx = optimizer.make_optimizer(tcfg, schedule)
        if state is None:
            # Parameters do not depend on the batch: initialise on one example (small compile).
            init_example = example_batch(cfg, 1, seconds, frames)
            state = jax.device_get(create_train_state(model, tx, init_example, seed=0,
                                                      mesh=mesh))
        self.initial = state
        self.state = parallel.replicate(state, mesh)
        self.batch = parallel.shard_batch(example_batch(cfg, batch_size, seconds, frames), mesh)
        self.jitted = make_train_step(model, tx, schedule, mesh, seed=0,
                                      label_smoothing=tcfg.label_smoothing)
        if not aot:
            return
        start = time.perf_counter()
        lowered = self.jitted.lower(self.state, self.batch)
        self.compiled = lowered.compile()
        self.compile_s = time.perf_counter() - start
        # The compiled program is one device's share; the lowered one is the global program.
        self.flops_per_sample = perf.compiled_flops(self.compiled) * mesh.size / batch_size
        # None where jax has no cost analysis of the lowered program (PJRT plugins: the GPU).
        self.lowered_flops_per_sample = (perf.compiled_flops(lowered) / batch_size
                                         if lowered.cost_analysis() else None)
        self.device_bytes = device_bytes(self.compiled.memory_analysis())

    def __call__(self):
        self.state, metrics = self.compiled(self.state, self.batch)
        return metrics


def _row(case: StepCase, t: bc.Timing, batch_size: int, **fields) -> dict[str, Any]:
    return {**fields, "batch": batch_size, "compile_s": case.compile_s,
            "ms": 1e3 * t.median, "iqr_pct": 100 * (t.p75 - t.p25) / t.median,
            "samples_per_s": batch_size / t.median,
            "gflop_per_sample": case.flops_per_sample / 1e9,
            "gflops_per_s": case.flops_per_sample * batch_size / t.median / 1e9,
            **t.as_dict()}


def bench_steps(args, meshes: dict[int, Any]) -> list[dict[str, Any]]:
    """Section "step": fusions and a one-device GEMM interleaved per (dtype, devices, batch)."""
    rows = []
    gemms = {d: bc.gemm_variant(bc.DTYPES[d], args.gemm_size) for d in args.dtypes}
    for dtype in args.dtypes:
        for ndev, mesh in meshes.items():
            for b in args.batches:
                if b % ndev:
                    continue
                cases = {f: StepCase(make_model_config(f, dtype, args.width), mesh, b,
                                     args.seconds, args.frames) for f in args.fusions}
                gemm, gemm_flops = gemms[dtype]
                timings = bc.time_interleaved(
                    [gemm, *(bc.Variant(f, c) for f, c in cases.items())], rounds=args.rounds,
                    warmup=args.warmup, target_s=0)
                peak = gemm_flops / timings[gemm.name].median / 1e9
                for f, c in cases.items():
                    r = _row(c, timings[f], b, fusion=f, dtype=dtype, devices=ndev)
                    r["peak_gflops_per_s"] = peak
                    r["pct_peak"] = 100 * r["gflops_per_s"] / (peak * ndev)
                    rows.append(r)
                print(f"  step: {dtype} devices={ndev} batch={b} done", flush=True)
    return rows


def bench_lengths(args, mesh) -> list[dict[str, Any]]:
    """Section "length": time against audio seconds (frames follow) and against frames."""
    b = min(args.batches)
    grid = [("seconds", s, math.ceil(s * args.fps - 1e-6)) for s in args.lengths]
    grid += [("frames", args.seconds, n) for n in args.frame_sweep]
    rows = []
    for sweep, seconds, frames in grid:
        cases = {f: StepCase(make_model_config(f, "f32", args.width), mesh, b, seconds, frames)
                 for f in ("gfbp", "amfbp")}
        timings = bc.time_interleaved([bc.Variant(f, c) for f, c in cases.items()],
                                      rounds=args.rounds, warmup=args.warmup, target_s=0)
        for f, c in cases.items():
            rows.append(_row(c, timings[f], b, sweep=sweep, fusion=f, seconds=seconds,
                             frames=frames))
        g, a = (next(r for r in rows[-2:] if r["fusion"] == f) for f in ("gfbp", "amfbp"))
        a["am_over_g_time"] = a["median_s"] / g["median_s"]
        a["am_over_g_flops"] = a["gflop_per_sample"] / g["gflop_per_sample"]
        print(f"  length: {sweep} {seconds} s {frames} frames done", flush=True)
    for sweep in ("seconds", "frames"):
        for f in ("gfbp", "amfbp"):
            sel = [r for r in rows if r["sweep"] == sweep and r["fusion"] == f]
            for r in sel:
                r["x_first"] = r["median_s"] / sel[0]["median_s"]
    return rows


def build_cache(clips: int, workdir: str) -> str:
    """A small synthetic corpus and its feature cache via the real `avfbp` commands."""
    corpus, cache = os.path.join(workdir, "corpus"), os.path.join(workdir, "cache")
    if cli.main(["synth", corpus, "--clips", str(clips), "--workers", "1"]):
        raise SystemExit("avfbp synth failed")
    if cli.main(["prepare", corpus, cache, "--workers", "1"]):
        raise SystemExit("avfbp prepare failed")
    return cache


def bench_loader(args, mesh, counter: bc.CompileCounter) -> dict[str, Any]:
    """Sections "loader" and "compiles" over a real feature cache."""
    cache = FeatureCache(args.cache)
    indices = np.arange(len(cache))
    b = min(args.batches)
    loader = TrainLoader(cache, indices, b, seed=0, buckets=args.buckets,
                         prefetch=data_config().prefetch, threads=data_config().loader_threads)
    n = max(args.loader_batches, 1)

    def pull(k: int) -> tuple[list[dict], float]:
        start = time.perf_counter()
        out = [next(loader) for _ in range(k)]
        return out, time.perf_counter() - start

    cold, cold_s = pull(n)  # first pass: clips read from disk
    warm, warm_s = pull(n)  # clips now in host memory (in_memory cache)
    loader.close()
    shapes = sorted({(x["audio"].shape[1], x["frames"].shape[1]) for x in cold + warm})

    cfg = make_model_config("amfbp", "f32", args.width)
    # Warm up the jitted step on every bucket shape the loader can produce.
    all_shapes = bucket_shapes(args.buckets, cache.sample_rate, cache.fps)
    case = StepCase(cfg, mesh, b, args.buckets[0], all_shapes[0][1], aot=False)
    step, state = case.jitted, case.state
    start = time.perf_counter()
    for samples, frames in all_shapes:
        example = example_batch(cfg, b, samples / cache.sample_rate, frames)
        example["audio"] = pcm16(example["audio"])  # the loader's dtype: no compile later
        state, m = step(state, parallel.shard_batch(example, mesh))
    jax.block_until_ready(m)
    warmup_compile_s = time.perf_counter() - start

    counter.reset()
    counter.counting = True
    device_batches = [parallel.shard_batch(x, mesh) for x in warm]
    start = time.perf_counter()
    for x in device_batches:
        state, m = step(state, x)
    jax.block_until_ready(m)
    step_s = time.perf_counter() - start
    # The real loop: the loader feeding the step (prefetch overlaps with the step).
    loader = TrainLoader(cache, indices, b, seed=1, buckets=args.buckets)
    start = time.perf_counter()
    for _ in range(n):
        state, m = step(state, parallel.shard_batch(next(loader), mesh))
    jax.block_until_ready(m)
    loop_s = time.perf_counter() - start
    loader.close()
    counter.counting = False
    return {
        "cache": args.cache, "clips": len(cache), "batch": b, "batches": n,
        "buckets": list(args.buckets), "shapes_seen": [list(s) for s in shapes],
        "loader_cold_samples_per_s": n * b / cold_s, "loader_warm_samples_per_s": n * b / warm_s,
        "step_samples_per_s": n * b / step_s, "loop_samples_per_s": n * b / loop_s,
        "loader_over_step": (n * b / warm_s) / (n * b / step_s),
        "warmup_shapes": len(all_shapes), "warmup_compile_s": warmup_compile_s,
        "compiles_after_warmup": counter.count, "steps_after_warmup": 2 * n,
    }


def bench_compiles_without_cache(args, mesh, counter: bc.CompileCounter) -> dict[str, Any]:
    """Section "compiles" when no cache is given: bucket-shaped example batches, shuffled."""
    b = min(args.batches)
    cfg = make_model_config("amfbp", "f32", args.width)
    shapes = bucket_shapes(args.buckets, 16000, args.fps)
    batches = [parallel.shard_batch(example_batch(cfg, b, s / 16000, f, seed=i), mesh)
               for i, (s, f) in enumerate(shapes)]
    case = StepCase(cfg, mesh, b, shapes[0][0] / 16000, shapes[0][1], aot=False)
    step, state = case.jitted, case.state
    for x in batches:
        state, m = step(state, x)
    jax.block_until_ready(m)
    counter.reset()
    counter.counting = True
    order = np.random.default_rng(0).permutation(np.tile(np.arange(len(batches)), 2))
    for i in order:
        state, m = step(state, batches[i])
    jax.block_until_ready(m)
    counter.counting = False
    return {"batch": b, "buckets": list(args.buckets), "warmup_shapes": len(shapes),
            "compiles_after_warmup": counter.count, "steps_after_warmup": len(order)}


STEP_COLUMNS = [("fusion", "fusion", ""), ("dtype", "dtype", ""), ("devices", "dev", "d"),
                ("batch", "batch", "d"), ("compile_s", "compile s", ".1f"),
                ("ms", "ms/step", ".1f"), ("iqr_pct", "IQR%", ".1f"),
                ("samples_per_s", "samples/s", ".1f"), ("gflop_per_sample", "GFLOP/sample", ".3f"),
                ("gflops_per_s", "GFLOP/s", ".2f"), ("pct_peak", "%peak", ".2f")]
LENGTH_COLUMNS = [("sweep", "sweep", ""), ("fusion", "fusion", ""), ("seconds", "audio s", "g"),
                  ("frames", "frames", "d"), ("ms", "ms/step", ".1f"), ("iqr_pct", "IQR%", ".1f"),
                  ("x_first", "x first", ".2f"), ("gflop_per_sample", "GFLOP/sample", ".3f"),
                  ("am_over_g_time", "AM/G time", ".3f"), ("am_over_g_flops", "AM/G FLOPs", ".3f")]


def main(argv: list[str] | None = None) -> int:
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
    p.add_argument("--loader-batches", type=int, default=8)
    p.add_argument("--sections", default="step,length,loader,compiles")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--gemm-size", type=int, default=None)
    p.add_argument("--quick", action="store_true",
                   help="tiny smoke run: 2 fusions, batch 8, 1 s audio, tiny widths, 2 rounds")
    p.add_argument("--out", required=True, help="JSON output path")
    p.add_argument("--plot", default=None, help="PNG: step time against audio length")
    if p.parse_known_args(argv)[0].quick:  # presets; flags given explicitly still win
        p.set_defaults(fusions="gfbp,amfbp", batches="8", dtypes="f32", seconds=1.0,
                       lengths="1,2", frame_sweep="5,10", buckets="1,2", rounds=2, warmup=1,
                       loader_batches=2, width=0.03, gemm_size=256)
    args = p.parse_args(argv)

    backend = jax.default_backend()
    args.width = args.width or (0.125 if backend == "cpu" else 1.0)
    args.gemm_size = args.gemm_size or (2048 if backend == "cpu" else 8192)
    args.fusions = [f for f in args.fusions.split(",") if f]
    if set(args.fusions) - set(FUSION_TYPES):
        raise SystemExit(f"--fusions: choose from {FUSION_TYPES}")
    args.dtypes = [d for d in args.dtypes.split(",") if d]
    if set(args.dtypes) - set(MODEL_DTYPES):
        raise SystemExit(f"--dtypes: choose from {tuple(MODEL_DTYPES)}")
    args.batches = bc.parse_ints(args.batches)
    args.lengths = [float(s) for s in args.lengths.split(",") if s]
    args.frame_sweep = bc.parse_ints(args.frame_sweep)
    args.buckets = [float(s) for s in args.buckets.split(",") if s]
    args.frames = math.ceil(args.seconds * args.fps - 1e-6)
    sections = set(args.sections.split(","))

    counts = sorted({jax.device_count() if d == "all" else int(d)
                     for d in args.devices.split(",") if d}, reverse=True)
    meshes = {n: parallel.make_mesh(n) for n in counts}
    counter = bc.CompileCounter()
    info = bc.machine_info()
    print(f"# bench_train on {bc.describe_machine(info)}; width {args.width}", flush=True)
    result: dict[str, Any] = {"benchmark": "train", "machine": info, "argv": sys.argv[1:],
                              "width": args.width, "gemm_size": args.gemm_size, "notes": []}
    if "step" in sections:
        result["step"] = bench_steps(args, meshes)
    if "length" in sections:
        result["length"] = bench_lengths(args, meshes[1] if 1 in meshes else meshes[counts[-1]])
    one = meshes[counts[-1]]
    if args.cache is None and args.build_cache and ("loader" in sections):
        args.cache = build_cache(args.build_cache, tempfile.mkdtemp(prefix="bench_train_"))
    if "loader" in sections and args.cache:
        result["loader"] = bench_loader(args, one, counter)
        result["compiles"] = {k: result["loader"][k] for k in (
            "warmup_shapes", "compiles_after_warmup", "steps_after_warmup")}
    elif "loader" in sections:
        result["notes"].append("loader: no --cache or --build-cache given; section skipped")
    if "compiles" in sections and "compiles" not in result:
        result["compiles"] = bench_compiles_without_cache(args, one, counter)

    if "step" in result:
        print(bc.format_table(result["step"], STEP_COLUMNS))
        print()
    if "length" in result:
        print(bc.format_table(result["length"], LENGTH_COLUMNS))
        print()
    if "step" in result:
        for d in args.dtypes:
            peaks = [r["peak_gflops_per_s"] for r in result["step"] if r["dtype"] == d]
            print(f"GEMM peak {d} ({args.gemm_size}^3, one device, timed in the step rounds):"
                  f" median {np.median(peaks):.1f} GFLOP/s")
    if "loader" in result:
        r = result["loader"]
        print(f"loader: {r['clips']} clips, batch {r['batch']}, buckets {r['buckets']}, shapes "
              f"{r['shapes_seen']}: cold {r['loader_cold_samples_per_s']:.1f} samples/s, warm "
              f"{r['loader_warm_samples_per_s']:.1f} samples/s; step on the same batches "
              f"{r['step_samples_per_s']:.1f} samples/s (loader/step "
              f"{r['loader_over_step']:.1f}x); loader+step loop {r['loop_samples_per_s']:.1f}"
              " samples/s")
    if "compiles" in result:
        c = result["compiles"]
        print(f"compiles after warm-up on {c['warmup_shapes']} bucket shapes: "
              f"{c['compiles_after_warmup']} in {c['steps_after_warmup']} steps")
    for note in result["notes"]:
        print(f"note: {note}")
    bc.write_json(args.out, result)
    if args.plot and "length" in result:
        plot(result["length"], args.plot)
    return 0


def plot(rows: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, (sweep, key) in zip(axes, [("seconds", "seconds"), ("frames", "frames")],
                                strict=True):
        for f in ("gfbp", "amfbp"):
            pts = sorted((r[key], r["ms"]) for r in rows if r["sweep"] == sweep
                         and r["fusion"] == f)
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=f)
        ax.set(xlabel="audio seconds" if key == "seconds" else "frames", ylabel="ms/step")
        ax.grid(True, alpha=0.3)
    axes[0].legend()
    bc.save_figure(fig, path)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
