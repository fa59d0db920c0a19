"""Device suite section "twin": bench_train's twin section on the device (tools/train_bench/
twin.py): our AM-FBP train step against its PyTorch twin's, eager and under torch.compile, at
each of `plan.twin_widths` (the paper's 1 first) and `plan.dtypes`, batch `plan.twin_batch`.

Its own process without preallocation (the driver's rule for every section but "train"), so
that JAX and torch share the card. Per case, our step and the eager twin are timed and saved
first; then the compiled twin (torch.compile compiles the forward, backward and update for
each case: the section's cost) and all three are timed again and replace those rows. A case is
skipped once the time left cannot hold 1.5x the slowest case so far.
"""

from __future__ import annotations

import time

import jax

from avfbp_jax.train import parallel
from tools.device.part import Part, time_left
from tools.device.plan import Plan
from tools.fbp_bench.torch_twin import torch_device_for
from tools.train_bench.twin import TwinCase


def run(plan: Plan, part: Part, *, work: str, commit: str) -> None:
    notes: list[str] = []
    part.update(rows=[], skipped=[], notes=notes, batch=plan.twin_batch, seconds=plan.seconds,
                frames=plan.frames, compile=plan.twin_compile)
    torch, device = torch_device_for(jax.default_backend(), notes)
    part.save()
    if torch is None:
        return
    notes.append(f"torch {torch.__version__} on {device}; f32 matmul precision "
                 f"{torch.get_float32_matmul_precision()!r}, cudnn TF32 "
                 f"{torch.backends.cudnn.allow_tf32}")
    mesh = parallel.make_mesh(1)
    slowest = 0.0
    for width in plan.twin_widths:
        state = None
        for dtype in plan.dtypes:
            what = f"width {width:g} {dtype} batch {plan.twin_batch}"
            if time_left() < 1.5 * slowest + 5:
                part["skipped"].append(f"{what}: time budget")
                continue
            start = time.time()
            try:
                state = _case(plan, part, torch, device, mesh, width, dtype, state)
            except Exception as e:  # noqa: BLE001 - recorded, the next case still runs
                part.error(what, e)
            slowest = max(slowest, time.time() - start)
            print(f"  twin {what}: {time.time() - start:.0f} s", flush=True)


def _case(plan: Plan, part: Part, torch, device: str, mesh, width: float, dtype: str, state):
    """One case: eager rows saved, then the compiled twin's (if time is left); its state."""
    tc = TwinCase(torch, device, mesh, width=width, dtype=dtype, batch=plan.twin_batch,
                  seconds=plan.seconds, frames=plan.frames, state=state)
    tc.add("torch", None)
    error = tc.logits_error() if state is None else None
    timing = {"rounds": plan.step_rounds, "warmup": 2}
    rows = tc.rows(**timing, twin_logits_rel_err=error)
    part["rows"] += rows
    part.save()
    if plan.twin_compile != "none" and time_left() > 10:
        tc.add("torch.compile", plan.twin_compile)
        part["rows"] = [r for r in part["rows"] if r not in rows]
        part["rows"] += tc.rows(**timing, twin_logits_rel_err=error)
        part.save()
    return tc.case.initial
