"""Device suite section "train": the paper-sized train step for every fusion and dtype, a batch
sweep and the largest batch that fits, with the GEMM peaks timed in the same process."""

from __future__ import annotations

import time
from typing import Any

import jax

from avfbp_jax.train import parallel
from tools import bench_common as bc
from tools.device.part import Part, time_left
from tools.device.plan import GIB, Plan
from tools.train_bench.step_case import StepCase, make_model_config


def run(plan: Plan, part: Part, *, work: str, commit: str) -> None:
    """The paper-sized train step (`plan.seconds` of audio and `plan.frames` crops per sample).

    Cases, most important first, each skipped once the budget cannot hold it (the estimate is
    1.5x the slowest case so far, compile and timing); each step is done for bf16, then f32:
      1. amfbp at `fit_batches`, then its largest batch;
      2. the other fusions at `step_batch`;
      3. amfbp with the Pallas FBP (model.fbp_impl) at `pallas_batches`;
      4. amfbp at `small_batches`;
      5. the largest batch of the other `max_fusions`.
    The largest batch is found, not guessed: each case is compiled ahead of time and XLA's
    buffer assignment (compiled.memory_analysis(): arguments + outputs - donated + temporaries)
    gives its device bytes before it runs; a straight line through the two largest batches that
    fit predicts the batch that fills `bytes_limit` (the allocator's limit, 94% of the card),
    rounded down to `batch_multiple`; that batch is compiled, checked against the limit and
    run; if it does not fit or the run raises RESOURCE_EXHAUSTED, 10% less, up to three tries.
    """
    dev = jax.devices()[0]
    stats = dev.memory_stats() or {}
    limit = (plan.memory_limit_gb * GIB if plan.memory_limit_gb is not None
             else stats.get("bytes_limit"))
    part.update(device=dev.device_kind, bytes_limit=limit, width=plan.width,
                seconds=plan.seconds, frames=plan.frames, rows=[], max_batch={}, skipped=[])
    mesh = parallel.make_mesh(1)
    peaks = {}
    for dtype in plan.dtypes:
        gemm, gemm_flops = bc.gemm_variant(bc.DTYPES[dtype], plan.gemm_size)
        t = bc.time_interleaved([gemm], rounds=5, target_s=0.2)[gemm.name]
        peaks[dtype] = gemm_flops / t.median / 1e12
        del gemm
    part["gemm_peak_tflops"] = peaks
    part["gemm_size"] = plan.gemm_size
    part.save()
    runner = StepRunner(plan, part, mesh, limit, peaks)
    for dtype in plan.dtypes:
        for b in plan.fit_batches:
            runner.case("amfbp", dtype, b)
        runner.largest("amfbp", dtype)
    for dtype in plan.dtypes:
        for f in plan.fusions:
            runner.case(f, dtype, plan.step_batch)
    for dtype in plan.dtypes:
        for b in plan.pallas_batches:
            runner.case("amfbp", dtype, b, fbp_impl="pallas")
    for dtype in plan.dtypes:
        for b in plan.small_batches:
            runner.case("amfbp", dtype, b)
    for dtype in plan.dtypes:
        for f in plan.max_fusions:
            if f != "amfbp":
                runner.largest(f, dtype)
    stats = dev.memory_stats() or {}
    part["peak_bytes_in_use"] = stats.get("peak_bytes_in_use")


class StepRunner:
    """Compiles, checks and times train-step cases; keeps the rows in the section's part."""

    def __init__(self, plan: Plan, part: Part, mesh, limit: float | None, peaks: dict):
        self.plan, self.part, self.mesh, self.limit, self.peaks = plan, part, mesh, limit, peaks
        self.slowest = 0.0  # seconds of the slowest case so far (compile + timing)
        self.initial: dict[tuple[str, str], Any] = {}  # host initial state per (fusion, dtype)

    def _affordable(self, what: str) -> bool:
        if time_left() > 1.5 * self.slowest + 5:
            return True
        self.part["skipped"].append(f"{what}: time budget")
        self.part.save()
        return False

    def case(self, fusion: str, dtype: str, batch: int, purpose: str = "",
             fbp_impl: str = "xla") -> dict | None:
        """One case: compile, predict bytes, run if it fits; returns its row (None if skipped)."""
        what = f"{fusion} {dtype} batch {batch}" + (f" fbp_impl {fbp_impl}"
                                                     if fbp_impl != "xla" else "")
        key = (fusion, dtype, batch, fbp_impl)
        done = [r for r in self.part["rows"]
                if (r["fusion"], r["dtype"], r["batch"], r["fbp_impl"]) == key]
        if done:
            return done[0]
        if not self._affordable(what):
            return None
        start = time.time()
        row: dict[str, Any] = {"fusion": fusion, "dtype": dtype, "batch": batch,
                               "fbp_impl": fbp_impl, "purpose": purpose}
        case = None
        try:
            cfg = make_model_config(fusion, dtype, self.plan.width, fbp_impl)
            case = StepCase(cfg, self.mesh, batch, self.plan.seconds, self.plan.frames,
                               state=self.initial.get((fusion, dtype)))
            self.initial[(fusion, dtype)] = case.initial  # the same parameters for both FBPs
            row.update(compile_s=case.compile_s, device_bytes=case.device_bytes,
                       gflop_per_sample=case.flops_per_sample / 1e9,
                       lowered_gflop_per_sample=(case.lowered_flops_per_sample or 0) / 1e9
                       or None)
            if self.limit and case.device_bytes and case.device_bytes > self.limit:
                row["fits"] = False
                row["why"] = (f"memory_analysis {case.device_bytes / GIB:.1f} GiB > limit "
                              f"{self.limit / GIB:.1f} GiB")
            else:
                t = bc.time_interleaved([bc.Variant(what, case)], rounds=self.plan.step_rounds,
                                        warmup=2, target_s=0.3)[what]
                tflops = case.flops_per_sample * batch / t.median / 1e12
                row.update(fits=True, ms=1e3 * t.median, iqr_pct=100 * (t.p75 - t.p25) / t.median,
                           samples_per_s=batch / t.median, tflops_per_s=tflops,
                           pct_peak=100 * tflops / self.peaks[dtype])
                stats = jax.devices()[0].memory_stats() or {}
                row["running_peak_bytes"] = stats.get("peak_bytes_in_use")
        except Exception as e:  # noqa: BLE001 - OOM and other failures are results here
            row["fits"] = False
            row["why"] = f"{type(e).__name__}: {str(e)[:300]}"
            if "RESOURCE_EXHAUSTED" not in str(e) and "out of memory" not in str(e).lower():
                self.part.error(what, e)
        finally:
            del case
        row["case_s"] = time.time() - start
        self.slowest = max(self.slowest, row["case_s"])
        self.part["rows"].append(row)
        self.part.save()
        print(f"  {what}: " + (f"{row['samples_per_s']:.1f} samples/s, compile "
              f"{row['compile_s']:.1f} s" if row.get("fits") else f"does not run: {row['why']}"),
              flush=True)
        return row

    def largest(self, fusion: str, dtype: str) -> None:
        """The largest batch of (fusion, dtype) that compiles and runs (see `run`)."""
        plan = self.plan

        def fitting() -> list[dict]:
            return sorted((r for r in self.part["rows"]
                           if (r["fusion"], r["dtype"], r["fbp_impl"]) == (fusion, dtype, "xla")
                           and r.get("device_bytes") and r.get("fits")), key=lambda r: r["batch"])

        fit = fitting()
        if len(fit) < 2:
            extra = [b for b in (plan.step_batch, 4 * plan.step_batch)
                     if b not in {r["batch"] for r in fit}]
            for b in extra[: 2 - len(fit)]:
                self.case(fusion, dtype, b, "fit")
            fit = fitting()
        key = f"{fusion} {dtype}"
        if len(fit) < 2 or not self.limit:
            self.part["max_batch"][key] = {"found": None, "why": "fewer than two fitting cases"
                                           if self.limit else "the device reports no limit"}
            self.part.save()
            return
        (b0, m0), (b1, m1) = [(r["batch"], r["device_bytes"]) for r in fit[-2:]]
        per_sample = (m1 - m0) / (b1 - b0)
        fixed = m0 - per_sample * b0
        predicted = int((self.limit - fixed) / per_sample) if per_sample > 0 else plan.max_batch_cap
        batch = max(min(predicted, plan.max_batch_cap) // plan.batch_multiple
                    * plan.batch_multiple, plan.batch_multiple)
        info = {"fit_batches": [b0, b1], "bytes_per_sample": per_sample, "fixed_bytes": fixed,
                "predicted": predicted, "limit_bytes": self.limit, "tries": []}
        found = fit[-1]
        for _ in range(3):
            if batch <= found["batch"]:
                break
            row = self.case(fusion, dtype, batch, "largest")
            if row is None:
                info["why_stopped"] = "time budget"
                break
            info["tries"].append({"batch": batch, "fits": row.get("fits"),
                                  "why": row.get("why")})
            if row.get("fits"):
                found = row
                break
            batch = int(batch * 0.9) // plan.batch_multiple * plan.batch_multiple
        info.update(found=found["batch"], samples_per_s=found.get("samples_per_s"),
                    device_bytes=found.get("device_bytes"),
                    capped=predicted >= plan.max_batch_cap)
        if info["capped"]:
            info["why"] = f"capped at {plan.max_batch_cap} (the line predicts {predicted})"
        self.part["max_batch"][key] = info
        self.part.save()
