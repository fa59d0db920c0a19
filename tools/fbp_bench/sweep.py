"""The FBP benchmark's sweep: `run_benchmark` over dims x dtypes x batches (each shape by
`bench_shape`), and the issue's targets read off its rows."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from tools import bench_common as bc
from tools.fbp_bench.counts import BYTE_NOTE, FLOP_NOTE, Dims
from tools.fbp_bench.shape import bench_shape
from tools.fbp_bench.torch_twin import torch_device_for

MODES = ("fwd", "fwd+bwd")
IMPLS = ("floor", "xla", "pallas", "mosaic", "torch", "naive")
# The fused kernels (interpret mode on CPU: timed there only when forced) and their modules.
FUSED_MODULES = {"pallas": "avfbp_jax.ops.fbp_pallas", "mosaic": "avfbp_jax.ops.fbp_mosaic"}
MFB_DIMS = (512, 512, 5, 1000)  # the original MFB size: the targets are stated here


def _ratio_target(text: str, num: dict | None, den: dict | None, limit: float, *,
                  at_least: bool = False, goal: bool = False) -> list[dict[str, Any]]:
    if num is None or den is None:
        return []
    value = num["median_s"] / den["median_s"]
    met = value >= limit if at_least else value <= limit
    return [{"target": text, "value": value, "met": met, "goal": goal}]


def targets(rows: list[dict[str, Any]], backend: str) -> list[dict[str, Any]]:
    """The issue's targets at the MFB size (512:512:5:1000), largest batch, from the rows.

    CPU (f32, fwd+bwd): fbp <= 1.25x the XLA floor and <= torch eager; goal: <= torch.compile.
    Pallas (f32 and bf16, B >= 8192): fwd <= 1.05x floor, fwd+bwd <= 1.15x (each residual
    strategy), and torch.compile at least 1.5x slower than it in both modes; the same for its
    Mosaic GPU version ("mosaic"), Triton's successor in Pallas.
    """
    dims = "x".join(map(str, MFB_DIMS))
    out = []
    for dtype in ("f32", "bf16"):
        sel = [r for r in rows if r["dtype"] == dtype and r["dims"] == dims]
        if not sel:
            continue
        b = max(r["batch"] for r in sel)
        get = {(r["variant"], r["mode"]): r for r in sel if r["batch"] == b}
        at = f"({dims}, {dtype}, B={b}, {backend})"
        if backend == "cpu" and dtype == "f32":
            fbp, mode = get.get(("fbp", "fwd+bwd")), "fwd+bwd"
            out += _ratio_target(f"fbp fwd+bwd <= 1.25x floor {at}", fbp,
                                 get.get(("floor", mode)), 1.25)
            out += _ratio_target(f"fbp fwd+bwd <= torch eager {at}", fbp,
                                 get.get(("torch", mode)), 1.0)
            out += _ratio_target(f"goal: fbp fwd+bwd <= torch.compile {at}", fbp,
                                 get.get(("torch.compile", mode)), 1.0, goal=True)
        if backend == "cpu" or b < 8192:
            continue
        for name, mode, limit in [("pallas", "fwd", 1.05), ("pallas:recompute", "fwd+bwd", 1.15),
                                  ("pallas:keep", "fwd+bwd", 1.15), ("mosaic", "fwd", 1.05),
                                  ("mosaic", "fwd+bwd", 1.15)]:
            kernel = get.get((name, mode))
            out += _ratio_target(f"{name} {mode} <= {limit}x floor {at}", kernel,
                                 get.get(("floor", mode)), limit)
            out += _ratio_target(f"{name} {mode} >= 1.5x faster than torch.compile {at}",
                                 get.get(("torch.compile", mode)), kernel, 1.5, at_least=True)
    return out


def run_benchmark(dims: Sequence[Dims], batches: Sequence[int], dtypes: Sequence[str],
                  modes: Sequence[str], impls: Sequence[str], *, rounds: int = 7,
                  warmup: int = 2, target_ms: float = 50.0, gemm_size: int | None = None,
                  torch_compile: bool = True, force_pallas: bool = False,
                  naive_max_gb: float | None = None, naive_max_s: float = 1.0,
                  log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Runs the sweep and returns the JSON-able result: rows, machine, GEMM peaks, targets, notes.

    impls: subset of IMPLS ("floor" also times torch's and numpy's GEMMs where present).
    force_pallas: time the fused kernels ("pallas", "mosaic") on CPU too (interpret mode: a
    correctness run, not a speed).
    """
    for name, got, allowed in [("modes", modes, MODES), ("dtypes", dtypes, tuple(bc.DTYPES)),
                               ("impls", impls, IMPLS)]:
        if not got or set(got) - set(allowed):
            raise ValueError(f"{name}: choose from {allowed}, got {list(got)}")
    backend = jax.default_backend()
    gemm_size = gemm_size or (2048 if backend == "cpu" else 8192)
    if naive_max_gb is None:
        naive_max_gb = free_memory_gb() / 4
    notes: list[str] = []
    torch, torch_device = None, None
    if "torch" in impls or "floor" in impls:
        torch, torch_device = torch_device_for(backend, notes)
    fused = []
    for name, module in FUSED_MODULES.items():
        if name not in impls:
            continue
        if backend == "cpu" and not force_pallas:
            notes.append(f"{name}: not timed on CPU (interpret mode is not a speed measurement;"
                         " force_pallas / --force-pallas runs it anyway)")
            continue
        try:
            importlib.import_module(module)
            fused.append(name)
        except ImportError as e:
            notes.append(f"{name}: {module} not importable ({e}): not timed")

    info = bc.machine_info()
    # Settings that change CPU speed without changing numbers (the allocator: see the README).
    info["env"] = {v: os.environ.get(v) for v in ("XLA_FLAGS", "LD_PRELOAD", "GLIBC_TUNABLES",
                                                   "OMP_NUM_THREADS")}
    log(f"# bench_fbp on {bc.describe_machine(info)}")
    peak_seen = {}  # latest XLA GEMM GFLOP/s per dtype (the naive layer's time estimate)
    for d in dtypes:
        gemm, gemm_flops = bc.gemm_variant(bc.DTYPES[d], gemm_size)
        peak_seen[d] = gemm_flops / bc.time_interleaved([gemm], rounds=3)[gemm.name].median / 1e9
    rows: list[dict[str, Any]] = []
    for dim in dims:
        for dtype in dtypes:
            for b in batches:
                rows += bench_shape(dim, dtype, b, modes=modes, impls=impls, rounds=rounds,
                                    warmup=warmup, target_s=target_ms / 1e3, gemm_size=gemm_size,
                                    torch=torch, torch_device=torch_device,
                                    torch_compile=torch_compile, fused=fused,
                                    naive_max_gb=naive_max_gb, naive_max_s=naive_max_s,
                                    peak_seen=peak_seen, notes=notes)
                log(f"  done {rows[-1]['dims']} {dtype} B={b}")
    median = lambda key, d: float(np.median([r[key] for r in rows if r["dtype"] == d]))
    libs = sorted({lib for r in rows for lib in r["gemm_peaks_gflops_per_s"]})
    info["loadavg_1m_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"benchmark": "fbp", "machine": info, "flop_counting": FLOP_NOTE,
            "byte_counting": BYTE_NOTE, "gemm_size": gemm_size,
            "gemm_peak_gflops_per_s": {d: median("peak_gflops_per_s", d) for d in dtypes},
            "gemm_peaks_by_library_gflops_per_s": {
                d: {lib: float(np.median([r["gemm_peaks_gflops_per_s"][lib] for r in rows
                                          if r["dtype"] == d
                                          and lib in r["gemm_peaks_gflops_per_s"]]))
                    for lib in libs if any(lib in r["gemm_peaks_gflops_per_s"] for r in rows
                                           if r["dtype"] == d)}
                for d in dtypes},
            "bandwidth_gb_per_s": float(np.median([r["bandwidth_gb_per_s"] for r in rows])),
            "rows": rows, "targets": targets(rows, backend), "notes": notes}


def free_memory_gb() -> float:
    """Free memory of the default device (available host memory on CPU), in GiB."""
    dev = jax.devices()[0]
    stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
    if stats and "bytes_limit" in stats:
        return (stats["bytes_limit"] - stats.get("bytes_in_use", 0)) / 2**30
    try:  # MemAvailable: free memory and the page cache the kernel can give back (Linux)
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) for line in f
                        if line.startswith("MemAvailable:")) / 2**20
    except (OSError, StopIteration, ValueError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    except (ValueError, OSError):
        return 4.0
