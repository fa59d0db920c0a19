"""One shape of the FBP benchmark: every variant of one (dims, dtype, batch) timed in the same
interleaved rounds as the references (GEMM peaks, copy bandwidth), one row per variant and mode
with its FLOPs, bytes and physical floor."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tools import bench_common as bc
from tools.fbp_bench.counts import Dims, kernel_flops, min_bytes, naive_cost
from tools.fbp_bench.inputs import CACHE_BYTES, copies_for, make_inputs
from tools.fbp_bench.jax_variants import (
    device_sets,
    jax_entry,
    mosaic_variants,
    naive_fn,
    pallas_variants,
    xla_variants,
)
from tools.fbp_bench.references import bandwidth_variant, gemm_floor, host_cost, reference_variants
from tools.fbp_bench.torch_twin import torch_variants


def bench_shape(dims: Dims, dtype: str, b: int, *, modes: Sequence[str], impls: Sequence[str],
                rounds: int, warmup: int, target_s: float, gemm_size: int, torch,
                torch_device: str | None, torch_compile: bool, fused: Sequence[str],
                naive_max_gb: float, naive_max_s: float, peak_seen: dict[str, float],
                notes: list[str]) -> list[dict[str, Any]]:
    """Times every variant of one (dims, dtype, batch) with the references, interleaved.

    fused: the fused kernels to time ("pallas", "mosaic"; see sweep.FUSED_MODULES)."""
    m, n, k, o = dims
    itemsize = jnp.dtype(bc.DTYPES[dtype]).itemsize
    label = f"{m}x{n}x{k}x{o} {dtype} B={b}"
    base = make_inputs(b, dims, seed=b)
    copies = copies_for(base, itemsize)
    if copies > 1:
        notes.append(f"{label}: inputs fit in {CACHE_BYTES // 2**20} MiB, calls rotate over"
                     f" {copies} copies")
    sets = [base] + [{name: a.copy() for name, a in base.items()} for _ in range(copies - 1)]
    jsets = device_sets(sets, dtype)
    entries = xla_variants(jsets, k, modes, impls)
    if "pallas" in fused:
        entries += pallas_variants(jsets, k, modes)
    if "mosaic" in fused:
        entries += mosaic_variants(jsets, k, modes, label, notes)
    if "floor" in impls and dtype == "f32" and jax.default_backend() == "cpu":
        entries += gemm_floor("numpy", np.matmul, lambda shape: np.empty(shape, np.float32),
                              sets, modes, lambda _: None)
    if torch is not None and torch_device is not None:
        entries += torch_variants(torch, sets, k, dtype, modes, impls, torch_compile,
                                  torch_device)
    flops = {}
    if "naive" in impls:
        w_naive = None
        for mode in modes:
            nflops, nbytes = naive_cost(b, m, n, o, itemsize, mode)
            est_s = nflops / (peak_seen[dtype] * 1e9)
            if nbytes > naive_max_gb * 2**30 or est_s > naive_max_s:
                notes.append(f"naive {label} {mode}: skipped (needs ~{nbytes / 2**30:.1f} GiB,"
                             f" ~{est_s:.1f} s/call at GEMM peak; limits {naive_max_gb:.1f} GiB,"
                             f" {naive_max_s} s)")
                continue
            if w_naive is None:
                w_naive = (jax.random.normal(jax.random.key(2), (o, m, n), jnp.float32)
                           / math.sqrt(m * n)).astype(bc.DTYPES[dtype])
            flops[("naive", mode)] = nflops
            args = [[s["x"], s["y"], w_naive] + ([s["g"]] if mode == "fwd+bwd" else [])
                    for s in jsets]
            entries.append(jax_entry("naive", mode, naive_fn, 3, args))

    refs = reference_variants(dtype, gemm_size, torch, torch_device)
    copy, copy_bytes = bandwidth_variant()
    timed = [v for _, v, _ in refs] + [copy] + [v for _, _, v in entries]
    timings = bc.time_interleaved(timed, rounds=rounds, warmup=warmup, target_s=target_s)
    peaks = {lib: fl / timings[v.name].median / 1e9 for lib, v, fl in refs}
    peak_seen[dtype] = peaks["xla"]
    # The fastest GEMM seen in these rounds: a square one, or a floor at the kernel's shapes.
    machine_peak = max([*peaks.values(), *(kernel_flops(b, m, n, k, o, mode)
                                            / timings[v.name].median / 1e9
                                            for name, mode, v in entries
                                            if name.startswith("floor"))])
    bandwidth = copy_bytes / timings[copy.name].median / 1e9
    rows = []
    for name, mode, v in entries:
        t = timings[v.name]
        faults, cpu_s = host_cost(v)
        fl = flops.get((name, mode), kernel_flops(b, m, n, k, o, mode))
        nbytes = min_bytes(name, mode, b, m, n, k, o, itemsize)
        compute_ms, memory_ms = 1e3 * fl / (machine_peak * 1e9), 1e3 * nbytes / (bandwidth * 1e9)
        rows.append({"dims": f"{m}x{n}x{k}x{o}", "m": m, "n": n, "k": k, "o": o, "dtype": dtype,
                     "batch": b, "mode": mode, "variant": name, "flops": fl, "bytes": nbytes,
                     "ms": t.median * 1e3, "iqr_pct": 100 * (t.p75 - t.p25) / t.median,
                     "samples_per_s": b / t.median, "gflops_per_s": fl / t.median / 1e9,
                     "peak_gflops_per_s": peaks["xla"], "gemm_peaks_gflops_per_s": peaks,
                     "machine_peak_gflops_per_s": machine_peak,
                     "pct_peak": 100 * fl / t.median / 1e9 / peaks["xla"],
                     "pct_machine_peak": 100 * fl / t.median / 1e9 / machine_peak,
                     "bandwidth_gb_per_s": bandwidth, "compute_floor_ms": compute_ms,
                     "memory_floor_ms": memory_ms,
                     "x_physical": t.median * 1e3 / max(compute_ms, memory_ms),
                     "input_copies": copies, "minor_faults_per_call": faults,
                     "host_cpu_ms_per_call": cpu_s * 1e3, **t.as_dict()})
    for r in rows:
        floor = next((q for q in rows if q["variant"] == "floor" and q["mode"] == r["mode"]), None)
        r["x_floor"] = r["median_s"] / floor["median_s"] if floor else None
    return rows
