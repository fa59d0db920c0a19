"""Device suite section "fbp": the FBP kernel benchmark (tools.fbp_bench) at the MFB size, every
variant but the naive layer."""

from __future__ import annotations

from typing import Any

from tools.device.part import Part
from tools.device.plan import Plan
from tools.fbp_bench.sweep import IMPLS, run_benchmark, targets

FBP_IMPLS = tuple(i for i in IMPLS if i != "naive")


def run(plan: Plan, part: Part, *, work: str, commit: str) -> None:
    """run_benchmark over every variant at the MFB size, one call per (batch, dtype), largest
    batch first, the merged result saved after each (a section stopped at its budget keeps the
    shapes it finished)."""
    for b in sorted(plan.fbp_batches, reverse=True):
        for dtype in plan.fbp_dtypes:
            result = run_benchmark(
                [plan.fbp_dims], [b], [dtype], ["fwd", "fwd+bwd"], list(FBP_IMPLS),
                rounds=plan.fbp_rounds, target_ms=plan.fbp_target_ms, gemm_size=plan.gemm_size,
                torch_compile=plan.fbp_torch_compile)
            part["result"] = merge_fbp(part["result"], result) if "result" in part else result
            part.save()


def merge_fbp(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two run_benchmark results as one: rows and notes joined, per-dtype peaks updated, the
    targets recomputed over all rows."""
    out = dict(b, rows=a["rows"] + b["rows"], notes=list(dict.fromkeys(a["notes"] + b["notes"])))
    for key in ("gemm_peak_gflops_per_s", "gemm_peaks_by_library_gflops_per_s"):
        out[key] = {**a[key], **b[key]}
    out["targets"] = targets(out["rows"], b["machine"]["backend"])
    return out
