"""The device suite's summary and README-ready Markdown: device, date and commit, then one table
per section, and the loader and the end-to-end run against the pure amfbp bf16 step."""

from __future__ import annotations

import math
from typing import Any

from tools.device.plan import GIB


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """Cross-section numbers: the loader and the e2e run against the pure amfbp bf16 step."""
    s = result["sections"]
    rows = [r for r in s.get("train", {}).get("rows", [])
            if r.get("fits") and r["fbp_impl"] == "xla"]
    step = {(r["fusion"], r["dtype"], r["batch"]): r["samples_per_s"] for r in rows}
    amfbp16 = {b: v for (f, d, b), v in step.items() if (f, d) == ("amfbp", "bf16")}
    out: dict[str, Any] = {}
    host = s.get("host", {}).get("rows", [])
    if host and amfbp16:
        loader = max((r for r in host if r["in_memory"]), key=lambda r: r["batch_size"])
        b = loader["batch_size"]
        ref_b = b if b in amfbp16 else max(amfbp16, key=amfbp16.get)
        out["loader_vs_step"] = {
            "loader_batch": b, "loader_samples_per_s": loader["warm_samples_per_s"],
            "step_batch": ref_b, "step_samples_per_s": amfbp16[ref_b],
            "loader_over_step": loader["warm_samples_per_s"] / amfbp16[ref_b]}
    e2e = s.get("e2e", {})
    if e2e.get("samples_per_s") and amfbp16:
        b = e2e["batch"]
        ref_b = b if b in amfbp16 else max(amfbp16, key=amfbp16.get)
        out["e2e_vs_step"] = {"e2e_samples_per_s": e2e["samples_per_s"], "step_batch": ref_b,
                              "step_samples_per_s": amfbp16[ref_b],
                              "e2e_over_step": e2e["samples_per_s"] / amfbp16[ref_b]}
    return out


def _fmt(v: Any, spec: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec) if spec else str(v)


def _table(rows: list[dict[str, Any]], cols: list[tuple[str, str, str]]) -> list[str]:
    out = ["| " + " | ".join(h for _, h, _ in cols) + " |",
           "|" + "|".join("---" for _ in cols) + "|"]
    out += ["| " + " | ".join(_fmt(r.get(k), f) for k, _, f in cols) + " |" for r in rows]
    return out


def markdown(result: dict[str, Any]) -> str:
    """The README-ready tables: device, date, commit, then one table per section."""
    s = result["sections"]
    setup = s.get("setup", {})
    m = setup.get("machine", {})
    v = setup.get("versions", {})
    lines = [f"## Device suite{' (dry run, CPU)' if result['dry_run'] else ''}", "",
             f"{m.get('device_kind', '?')} x{m.get('devices', '?')} ({m.get('backend', '?')}), "
             f"{m.get('cpu_count', '?')} CPU cores ({m.get('cpu_model', '?')}); "
             f"{result['started_utc'][:10]}; commit {result['commit']}; jax {v.get('jax')}, "
             f"torch {v.get('torch')}, triton {v.get('triton')}; suite wall "
             f"{result.get('wall_s', 0):.0f} s.", ""]
    if setup.get("nvidia_smi"):
        lines += ["```", setup["nvidia_smi"], "```", ""]
    status = [{"section": "install", "status": result["install"]["status"],
               "wall_s": result["install"]["seconds"]}]
    status += [{"section": k, "status": p.get("status"), "wall_s": p.get("wall_s"),
                "budget_s": p.get("budget_s"), "errors": len(p.get("errors", []))}
               for k, p in s.items()]
    lines += _table(status, [("section", "section", ""), ("status", "status", ""),
                             ("wall_s", "wall s", ".0f"), ("budget_s", "budget s", ".0f"),
                             ("errors", "errors", "")]) + [""]
    t = s.get("pytest", {})
    if "counts" in t:
        c = t["counts"]
        bad = [n for n, x in t["tests"].items() if x["outcome"] in ("failed", "error")]
        lines += [f"`pytest -m gpu`: {c['passed']} passed, {c['failed']} failed, "
                  f"{c['error']} errors, {c['skipped']} skipped"
                  + (f"; failing: {', '.join(bad)}" if bad else "") + ".", ""]
    fbp = s.get("fbp", {}).get("result", {})
    if fbp.get("rows"):
        from tools.fbp_bench.report import report  # imports jax: only where there are rows

        lines += ["FBP kernel (tools.fbp_bench.sweep.run_benchmark):", "",
                  report(fbp, markdown=True), ""]
    fusion = s.get("fusion", {}).get("result", {})
    if fusion.get("rows"):
        from tools.fusion_bench.report import report as fusion_report

        lines += ["Fusion family (tools.fusion_bench.sweep.run_benchmark):", "",
                  fusion_report(fusion, markdown=True), ""]
    tr = s.get("train", {})
    if tr.get("rows"):
        peaks = tr.get("gemm_peak_tflops", {})
        lines += [f"Train step, width {tr['width']}, {tr['seconds']:g} s audio + {tr['frames']} "
                  f"frames ({tr['frames'] / tr['seconds']:g} fps) per sample, one device; GEMM "
                  f"peak ({tr.get('gemm_size')}^3, same run) "
                  + ", ".join(f"{d} {p:.1f} TFLOP/s" for d, p in peaks.items())
                  + "; FLOPs from XLA's cost analysis of the compiled step:", ""]
        rows = [dict(r, device_gib=(r.get("device_bytes") or 0) / GIB or None,
                     peak_gib=(r.get("running_peak_bytes") or 0) / GIB or None)
                for r in tr["rows"]]
        lines += _table(rows, [("fusion", "fusion", ""), ("fbp_impl", "FBP", ""),
                               ("dtype", "dtype", ""),
                               ("batch", "batch", "d"), ("compile_s", "compile s", ".1f"),
                               ("ms", "ms/step", ".1f"), ("samples_per_s", "samples/s", ",.0f"),
                               ("gflop_per_sample", "GFLOP/sample", ".2f"),
                               ("tflops_per_s", "TFLOP/s", ".2f"),
                               ("pct_peak", "% peak", ".1f"),
                               ("device_gib", "XLA GiB", ".2f"),
                               ("peak_gib", "running peak GiB", ".2f")]) + [""]
        mx = [dict(x, key=k, fit=f"{x['fit_batches']}" if "fit_batches" in x else None,
                   per_mib=(x.get("bytes_per_sample") or 0) / 2**20 or None)
              for k, x in tr.get("max_batch", {}).items()]
        if mx:
            lines += ["Largest batch (memory_analysis line through two batches, predicted, "
                      "then compiled and run):", ""]
            lines += _table(mx, [("key", "fusion dtype", ""), ("found", "largest batch", ""),
                                 ("predicted", "predicted", ""), ("fit", "fit on", ""),
                                 ("per_mib", "MiB/sample", ".1f"),
                                 ("samples_per_s", "samples/s", ",.0f"),
                                 ("why", "note", "")]) + [""]
        if tr.get("skipped"):
            lines += ["Skipped for time: " + "; ".join(tr["skipped"]) + ".", ""]
    tw = s.get("twin", {})
    if tw.get("rows"):
        lines += [f"Train step against its PyTorch twin (tools/torch_twins): AM-FBP, batch "
                  f"{tw['batch']}, {tw['seconds']:g} s audio + {tw['frames']} frames per sample, "
                  f"the same parameters, batch, loss and optimizer; bf16 is torch autocast for "
                  f"the twin; torch.compile backend {tw['compile']}; time/jax > 1: ours is "
                  f"faster; logits err: the float32 twin's eval logits against ours:", ""]
        lines += _table(tw["rows"], [("width", "width", "g"), ("dtype", "dtype", ""),
                                     ("impl", "step", ""), ("compile_s", "compile s", ".1f"),
                                     ("first_call_s", "1st call s", ".1f"),
                                     ("ms", "ms/step", ".1f"),
                                     ("samples_per_s", "samples/s", ",.0f"),
                                     ("over_jax", "time/jax", ".2f"),
                                     ("twin_logits_rel_err", "logits err", ".1e")]) + [""]
        lines += [f"Twin notes: {'; '.join(tw.get('notes', []))}."]
        if tw.get("skipped"):
            lines += ["Twin cases skipped for time: " + "; ".join(tw["skipped"]) + "."]
        lines += [""]
    h = s.get("host", {})
    if h.get("rows"):
        lines += [f"Host: loader over {h['clips']} clips, {h['threads']} threads:", ""]
        lines += _table(h["rows"], [("in_memory", "in memory", ""), ("batch_size", "batch", "d"),
                                    ("warm_samples_per_s", "warm samples/s", ",.0f"),
                                    ("cold_batches_per_s", "cold batches/s", ".2f"),
                                    ("bytes_per_sample", "bytes/sample", ",.0f")]) + [""]
        if "h2d" in h:
            x = h["h2d"]
            lines += [f"Host->device: batch {x['batch']} ({x['bytes'] / 2**20:.1f} MiB) in "
                      f"{1e3 * x['median_s']:.1f} ms, {x['gb_per_s']:.2f} GB/s, "
                      f"{x['samples_per_s']:,.0f} samples/s. Bytes/sample by key: "
                      + ", ".join(f"{k} {n:,.0f} ({h['rows'][-1]['dtypes'][k]})" for k, n in
                                  h["rows"][-1]["bytes_per_sample_by_key"].items()) + ".", ""]
    summ = result.get("summary", {})
    if "loader_vs_step" in summ:
        x = summ["loader_vs_step"]
        lines += [f"Loader {x['loader_samples_per_s']:,.0f} samples/s (batch {x['loader_batch']})"
                  f" against the amfbp bf16 step's {x['step_samples_per_s']:,.0f} (batch "
                  f"{x['step_batch']}): {x['loader_over_step']:.2f}x.", ""]
    e = s.get("e2e", {})
    if e.get("samples_per_s"):
        c = s.get("corpus", {})
        line = (f"End to end: {e['experiment']}, {e['steps']} steps of batch {e['batch']} "
                f"({e['dtype']}), {e['train_clips']} train clips (padding "
                f"{100 * e['padding_fraction']:.1f}% of rows): {e['samples_per_s']:,.0f} samples/s "
                f"(metrics.json throughput: compilation and evaluation excluded, waits for the "
                f"loader included; {_fmt(e['throughput'].get('utilization'), '.1%')} of "
                f"{_fmt(e['throughput'].get('peak_tflops_per_device'), '.3g')} TFLOP/s, "
                f"{e['throughput'].get('peak_source')})")
        if "e2e_vs_step" in summ:
            x = summ["e2e_vs_step"]
            line += (f", {x['e2e_over_step']:.2f}x the pure amfbp bf16 step at batch "
                     f"{x['step_batch']} ({x['step_samples_per_s']:,.0f})")
        line += f"; val WA {_fmt(e.get('val_wa'), '.3f')}, test WA {_fmt(e.get('test_wa'), '.3f')}."
        if c.get("synth_s"):
            line += (f" Corpus: {c['clips']} clips synthesised in {c['synth_s']:.0f} s and "
                     f"prepared in {_fmt(c.get('prepare_s'), '.0f')} s with {c['workers']} "
                     "workers (in the background of the timed sections).")
        lines += [line, ""]
    return "\n".join(lines)
