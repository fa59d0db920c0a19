"""Device suite section "fusion": the fusion family benchmark (tools.fusion_bench) at the
reference sizes, our module against its floor and the PyTorch twin eager, one member after
another in the model's order while the budget lasts (each saved when done; a member that fails
its check is an error of its own, not a stop). torch.compile is left out here: about 10 s a
compile, two per member, it would take the section's whole budget (`python3 -m
tools.bench_fusion` on the machine times it)."""

from __future__ import annotations

from avfbp_jax.models.config import model_config, tiny_model_config
from tools.device.part import Part, time_left
from tools.device.plan import Plan
from tools.fusion_bench.sweep import FAMILY, MODES, run_benchmark


def run(plan: Plan, part: Part, *, work: str, commit: str) -> None:
    """run_benchmark over the family (tiny_model_config's settings in a dry run)."""

    def progress(result):
        part["result"] = result
        part.save()

    run_benchmark(tiny_model_config() if plan.dry_run else model_config(), FAMILY,
                  plan.fusion_inputs, plan.fusion_batches, plan.fusion_dtypes, MODES,
                  rounds=plan.fusion_rounds, target_ms=plan.fusion_target_ms,
                  gemm_size=plan.gemm_size, torch_compile=False, keep_going=True,
                  stop=lambda: time_left() < plan.fusion_member_s, progress=progress)
