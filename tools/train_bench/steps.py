"""The train-step sections of bench_train: samples/s per fusion, dtype, batch and device count
against the same-run GEMM peak ("step"), and step time against audio length and frame count for
G-FBP and AM-FBP ("length")."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tools import bench_common as bc
from tools.train_bench.step_case import StepCase, make_model_config


def _row(case: StepCase, t: bc.Timing, batch_size: int, **fields) -> dict[str, Any]:
    return {**fields, "batch": batch_size, "compile_s": case.compile_s,
            "ms": 1e3 * t.median, "iqr_pct": 100 * (t.p75 - t.p25) / t.median,
            "samples_per_s": batch_size / t.median,
            "gflop_per_sample": case.flops_per_sample / 1e9,
            "gflops_per_s": case.flops_per_sample * batch_size / t.median / 1e9,
            **t.as_dict()}


def bench_steps(meshes: dict[int, Any], *, fusions: Sequence[str], dtypes: Sequence[str],
                batches: Sequence[int], width: float, seconds: float, frames: int,
                gemm_size: int, rounds: int, warmup: int) -> list[dict[str, Any]]:
    """Section "step": fusions and a one-device GEMM interleaved per (dtype, devices, batch).

    meshes: device count -> mesh; a batch not divisible by the device count is skipped.
    """
    rows = []
    gemms = {d: bc.gemm_variant(bc.DTYPES[d], gemm_size) for d in dtypes}
    for dtype in dtypes:
        for ndev, mesh in meshes.items():
            for b in batches:
                if b % ndev:
                    continue
                cases = {f: StepCase(make_model_config(f, dtype, width), mesh, b, seconds,
                                     frames) for f in fusions}
                gemm, gemm_flops = gemms[dtype]
                timings = bc.time_interleaved(
                    [gemm, *(bc.Variant(f, c) for f, c in cases.items())], rounds=rounds,
                    warmup=warmup, target_s=0)
                peak = gemm_flops / timings[gemm.name].median / 1e9
                for f, c in cases.items():
                    r = _row(c, timings[f], b, fusion=f, dtype=dtype, devices=ndev)
                    r["peak_gflops_per_s"] = peak
                    r["pct_peak"] = 100 * r["gflops_per_s"] / (peak * ndev)
                    rows.append(r)
                print(f"  step: {dtype} devices={ndev} batch={b} done", flush=True)
    return rows


def bench_lengths(mesh: Any, *, batch: int, lengths: Sequence[float], frame_sweep: Sequence[int],
                  fps: float, seconds: float, width: float, rounds: int, warmup: int
                  ) -> list[dict[str, Any]]:
    """Section "length": time against audio `lengths` (frames follow at `fps`) and against the
    frame counts of `frame_sweep` at `seconds` of audio, f32, G-FBP and AM-FBP interleaved."""
    grid = [("seconds", s, math.ceil(s * fps - 1e-6)) for s in lengths]
    grid += [("frames", seconds, n) for n in frame_sweep]
    rows = []
    for sweep, length, frames in grid:
        cases = {f: StepCase(make_model_config(f, "f32", width), mesh, batch, length, frames)
                 for f in ("gfbp", "amfbp")}
        timings = bc.time_interleaved([bc.Variant(f, c) for f, c in cases.items()],
                                      rounds=rounds, warmup=warmup, target_s=0)
        for f, c in cases.items():
            rows.append(_row(c, timings[f], batch, sweep=sweep, fusion=f, seconds=length,
                             frames=frames))
        g, a = (next(r for r in rows[-2:] if r["fusion"] == f) for f in ("gfbp", "amfbp"))
        a["am_over_g_time"] = a["median_s"] / g["median_s"]
        a["am_over_g_flops"] = a["gflop_per_sample"] / g["gflop_per_sample"]
        print(f"  length: {sweep} {length} s {frames} frames done", flush=True)
    for sweep in ("seconds", "frames"):
        for f in ("gfbp", "amfbp"):
            sel = [r for r in rows if r["sweep"] == sweep and r["fusion"] == f]
            for r in sel:
                r["x_first"] = r["median_s"] / sel[0]["median_s"]
    return rows
