"""The fusion benchmark's result as a table (plain text or Markdown) with the reference speeds and
notes."""

from __future__ import annotations

from typing import Any

from tools import bench_common as bc

COLUMNS = [("member", "member", ""), ("mode", "mode", ""), ("dtype", "dtype", ""),
           ("batch", "batch", "d"), ("ms", "ms", ".3f"), ("iqr_pct", "IQR%", ".0f"),
           ("floor_ms", "floor ms", ".3f"), ("x_floor", "x floor", ".2f"),
           ("physical_ms", "phys ms", ".3f"), ("x_physical", "x phys", ".2f"),
           ("floor_x_physical", "floor x phys", ".2f"),
           ("torch_ms", "torch ms", ".3f"), ("torch_over_ours", "torch/ours", ".2f"),
           ("torch_compile_ms", "compile ms", ".3f"),
           ("compile_over_ours", "compile/ours", ".2f"),
           ("ours_error", "ours err", ".0e"), ("unchecked", "unchecked", "d")]


def report(result: dict[str, Any], markdown: bool = False) -> str:
    """The rows as a table, then the GEMM peaks, the bandwidth, the counting rules and notes."""
    rows = [dict(r, ours_error=r["error_vs_twin"].get("ours"), unchecked=len(r["unchecked_arrays"]))
            for r in result["rows"]]
    table = (bc.markdown_table if markdown else bc.format_table)(rows, COLUMNS)
    inputs = result["inputs"]
    out = [f"inputs m={inputs['m']}, n={inputs['n']}; ms: our module (jitted, deterministic);"
           " floor: its GEMMs (MCB: and FFTs) alone in XLA; phys: max(FLOPs / GEMM peak,"
           " bytes / bandwidth); torch, compile: the PyTorch twin eager and torch.compile'd;"
           " ours err: ours against the twin in float64, the largest norm-wise relative error"
           " over the output and every gradient that rounding noise leaves decidable"
           " (unchecked: how many do not; tools/fusion_bench/agreement.py)", table, ""]
    for dtype in dict.fromkeys(r["dtype"] for r in rows):
        sel = [r for r in rows if r["dtype"] == dtype]
        peaks = {lib: max(r["gemm_peaks_gflops_per_s"][lib] for r in sel)
                 for lib in sel[0]["gemm_peaks_gflops_per_s"]}
        out.append(f"GEMM peak {dtype} ({result['gemm_size']}^3, best over the members' rounds,"
                   f" GFLOP/s): " + ", ".join(f"{lib} {v:.1f}" for lib, v in peaks.items()))
    if rows:
        bw = sorted(r["bandwidth_gb_per_s"] for r in rows)
        out.append(f"copy bandwidth (read + write, median over the members' rounds):"
                   f" {bw[len(bw) // 2]:.1f} GB/s")
    out += [result["flop_counting"], result["byte_counting"]]
    out += [f"note: {note}" for note in result["notes"]]
    out += [f"ERROR {error}" for error in result["errors"]]
    if result["skipped"]:
        out.append("skipped for time: " + ", ".join(result["skipped"]))
    return "\n".join(out)
