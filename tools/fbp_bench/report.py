"""The FBP benchmark's result as tables (plain text or Markdown, with the reference speeds,
targets and notes) and as a plot of samples/s against batch."""

from __future__ import annotations

from typing import Any

from avfbp_jax import atomic
from tools import bench_common as bc


def columns(backend: str) -> list[tuple[str, str, str]]:
    flops = ("gflops_per_s", "GFLOP/s", ".1f") if backend == "cpu" else ("tflops_per_s",
                                                                         "TFLOP/s", ".1f")
    return [("dims", "dims m x n x k x o", ""), ("dtype", "dtype", ""), ("mode", "mode", ""),
            ("batch", "batch", "d"), ("variant", "variant", ""), ("ms", "ms/call", ".3f"),
            ("iqr_pct", "IQR%", ".1f"), ("samples_per_s", "samples/s", ",.0f"), flops,
            ("pct_machine_peak", "%peak", ".1f"), ("x_floor", "x floor", ".2f"),
            ("compute_floor_ms", "FLOP floor ms", ".3f"), ("memory_floor_ms", "byte floor ms",
                                                           ".3f"),
            ("x_physical", "x phys", ".2f"), ("minor_faults_per_call", "faults", "d"),
            ("host_cpu_ms_per_call", "host CPU ms", ".0f")]


def report(result: dict[str, Any], markdown: bool = False) -> str:
    """The result as a table (plain text or Markdown), the reference speeds, targets and notes."""
    backend = result["machine"]["backend"]
    cols = columns(backend)
    rows = [dict(r, tflops_per_s=r["gflops_per_s"] / 1e3) for r in result["rows"]]
    table = (bc.markdown_table if markdown else bc.format_table)(rows, cols)
    out = [table, ""]
    for d, libs in result["gemm_peaks_by_library_gflops_per_s"].items():
        peaks = ", ".join(f"{lib} {v:.1f}" for lib, v in libs.items())
        out.append(f"GEMM peak {d} ({result['gemm_size']}^3, timed in every shape's rounds,"
                   f" GFLOP/s): {peaks}")
    out.append(f"copy bandwidth (read + write, timed in every shape's rounds):"
               f" {result['bandwidth_gb_per_s']:.1f} GB/s")
    for t in result["targets"]:
        verdict = "met" if t["met"] else "MISSED"
        out.append(f"target {t['target']}: {t['value']:.3f} -> {verdict}")
    out += [f"note: {note}" for note in result["notes"]]
    return "\n".join(out)


def plot(rows: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["dims"], r["dtype"], r["mode"]) for r in rows})
    colors = {name: f"C{i}" for i, name in enumerate(dict.fromkeys(r["variant"] for r in rows))}
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (dims, dtype, mode) in zip(axes[0], panels, strict=True):
        sel = [r for r in rows if (r["dims"], r["dtype"], r["mode"]) == (dims, dtype, mode)]
        for name in dict.fromkeys(r["variant"] for r in sel):
            pts = sorted((r["batch"], r["samples_per_s"]) for r in sel if r["variant"] == name)
            ax.plot(*zip(*pts, strict=True), marker="o", label=name, color=colors[name])
        ax.set(xscale="log", yscale="log", xlabel="batch", ylabel="samples/s",
               title=f"{dims} {dtype} {mode}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    atomic.write(path, lambda f: fig.savefig(f, format="png", dpi=120, bbox_inches="tight"))
    plt.close(fig)
