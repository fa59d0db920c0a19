"""bench_train's result as printed tables and lines, and the plot of step time against length."""

from __future__ import annotations

from typing import Any

import numpy as np

from avfbp_jax import atomic
from tools import bench_common as bc

STEP_COLUMNS = [("fusion", "fusion", ""), ("dtype", "dtype", ""), ("devices", "dev", "d"),
                ("batch", "batch", "d"), ("compile_s", "compile s", ".1f"),
                ("ms", "ms/step", ".1f"), ("iqr_pct", "IQR%", ".1f"),
                ("samples_per_s", "samples/s", ".1f"), ("gflop_per_sample", "GFLOP/sample", ".3f"),
                ("gflops_per_s", "GFLOP/s", ".2f"), ("pct_peak", "%peak", ".2f")]
LENGTH_COLUMNS = [("sweep", "sweep", ""), ("fusion", "fusion", ""), ("seconds", "audio s", "g"),
                  ("frames", "frames", "d"), ("ms", "ms/step", ".1f"), ("iqr_pct", "IQR%", ".1f"),
                  ("x_first", "x first", ".2f"), ("gflop_per_sample", "GFLOP/sample", ".3f"),
                  ("am_over_g_time", "AM/G time", ".3f"), ("am_over_g_flops", "AM/G FLOPs", ".3f")]
TWIN_COLUMNS = [("width", "width", "g"), ("dtype", "dtype", ""), ("batch", "batch", "d"),
                ("impl", "step", ""), ("compile_s", "compile s", ".1f"),
                ("first_call_s", "1st call s", ".1f"), ("ms", "ms/step", ".1f"),
                ("iqr_pct", "IQR%", ".1f"), ("samples_per_s", "samples/s", ".1f"),
                ("over_jax", "time/jax", ".2f"), ("twin_logits_rel_err", "logits err", ".1e")]
LOADER_COLUMNS = [("in_memory", "in memory", ""), ("batch_size", "batch", "d"),
                  ("cold_batches_per_s", "cold b/s", ".1f"),
                  ("warm_batches_per_s", "warm b/s", ".1f"),
                  ("warm_samples_per_s", "samples/s", ".0f"), ("steps_per_epoch", "steps/ep", "d"),
                  ("shapes", "shapes", "d"), ("padding_efficiency", "pad eff", ".2f")]


def summary(result: dict[str, Any]) -> str:
    """Every section's table or line, the GEMM peaks and the notes."""
    out = []
    if "step" in result:
        out += [bc.format_table(result["step"], STEP_COLUMNS), ""]
    if "length" in result:
        out += [bc.format_table(result["length"], LENGTH_COLUMNS), ""]
    if result.get("twin"):
        out += [bc.format_table(result["twin"], TWIN_COLUMNS), ""]
    if "step" in result:
        for d in dict.fromkeys(r["dtype"] for r in result["step"]):
            peaks = [r["peak_gflops_per_s"] for r in result["step"] if r["dtype"] == d]
            out.append(f"GEMM peak {d} ({result['gemm_size']}^3, one device, timed in the step "
                       f"rounds): median {np.median(peaks):.1f} GFLOP/s")
    if "loader" in result:
        r = result["loader"]
        out += [f"loader: {r['clips']} clips, {r['cache_bytes'] / 2**20:.1f} MiB packed; buckets "
                f"{r['buckets']} s; {r['seconds']:g} s warm",
                bc.format_table(r["rows"], LOADER_COLUMNS)]
        if "step_samples_per_s" in r:
            out.append(f"step on the loader's batches (batch {r['batch']}, shapes "
                       f"{r['shapes_seen']}): {r['step_samples_per_s']:.1f} samples/s; loader "
                       f"in memory {r['loader_samples_per_s']:.1f} samples/s "
                       f"({r['loader_over_step']:.1f}x the step); loader+step loop "
                       f"{r['loop_samples_per_s']:.1f} samples/s")
    if "compiles" in result:
        c = result["compiles"]
        out.append(f"compiles after warm-up on {c['warmup_shapes']} bucket shapes: "
                   f"{c['compiles_after_warmup']} in {c['steps_after_warmup']} steps")
    out += [f"note: {note}" for note in result["notes"]]
    return "\n".join(out)


def plot(rows: list[dict[str, Any]], path: str) -> None:
    """PNG of ms/step against audio seconds and against frames (the "length" rows)."""
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
    atomic.write(path, lambda f: fig.savefig(f, format="png", dpi=120, bbox_inches="tight"))
    plt.close(fig)
