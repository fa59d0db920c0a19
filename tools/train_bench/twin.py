"""bench_train's "twin" section (and the device suite's): our jitted AM-FBP train step against
the PyTorch twin's step (tools/torch_twins), eager and under torch.compile, on the same
parameters, batch, loss and optimizer (AdamW, clipping, our schedule), timed in interleaved
rounds.

bfloat16 is our model.dtype "bfloat16" against the twin under torch.autocast(bfloat16); both
keep float32 parameters. Both steps train with dropout on (FBP products), as in a run. Each
(width, dtype) case also records how far the twin's logits (eval mode, float32 twin) are from
ours on the case's batch (once per width), so that a twin that stopped being one is seen in the
table.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import numpy as np

from avfbp_jax.models.model import AVModel
from avfbp_jax.train.config import train_config
from tools import bench_common as bc
from tools.fbp_bench.references import torch_sync
from tools.train_bench.step_case import StepCase, make_model_config

COMPILE_BACKENDS = ("inductor", "aot_eager", "none")  # "none": no torch.compile variant


def _relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


class TwinCase:
    """One (width, dtype, batch) comparison: our compiled step and the twin's steps on one batch.

    `add` builds a twin step (and runs its first call: torch.compile compiles there), `rows`
    times our step and every added twin step in interleaved rounds.
    """

    def __init__(self, torch, device: str, mesh: Any, *, width: float, dtype: str, batch: int,
                 seconds: float, frames: int, state: Any = None):
        """state: a host initial state of this width's model (`self.case.initial`) to start
        from, so that every case of a width shares parameters."""
        from tools.torch_twins.model import to_torch

        self.cfg = make_model_config("amfbp", dtype, width)
        self.case = StepCase(self.cfg, mesh, batch, seconds, frames, state=state)
        self.torch, self.device, self.width, self.dtype, self.batch = (torch, device, width,
                                                                        dtype, batch)
        self.tbatch = to_torch(self.case.host_batch, device)
        self.sync = torch_sync(torch, device)
        self.steps: dict[str, Any] = {}
        self.first_call_s: dict[str, float] = {}

    def add(self, name: str, backend: str | None) -> None:
        """A twin step from the case's initial parameters; backend: torch.compile's, or None."""
        from tools.torch_twins.model import AVModelTwin, load_params
        from tools.torch_twins.step import TwinStep

        if backend:
            self.torch.compiler.reset()  # fresh guards per case: no silent fall-back to eager
        twin = AVModelTwin(self.cfg).to(self.device)
        load_params(twin, self.case.initial.params)
        step = TwinStep(twin, train_config(), device=self.device, compile_=backend)
        start = time.perf_counter()
        self.sync(step(self.tbatch))
        self.first_call_s[name] = time.perf_counter() - start
        self.steps[name] = step

    def logits_error(self) -> float:
        """Relative error of the float32 twin's eval logits against ours (float32 model)."""
        from tools.torch_twins.model import AVModelTwin, load_params

        cfg = make_model_config("amfbp", "f32", self.width)
        params = self.case.initial.params
        model = AVModel(cfg)
        ours = jax.jit(lambda p, b: model.apply({"params": p}, b)[0])(params, self.case.host_batch)
        twin = AVModelTwin(cfg).to(self.device)
        load_params(twin, params)
        with self.torch.no_grad():
            theirs = twin.eval()(self.tbatch).cpu().numpy()
        return _relative_error(theirs, np.asarray(ours))

    def rows(self, *, rounds: int, warmup: int, **fields) -> list[dict[str, Any]]:
        """Our step and the added twin steps timed in interleaved rounds, one row each."""
        variants = [bc.Variant("jax", self.case)]
        variants += [bc.Variant(name, lambda step=step: step(self.tbatch), self.sync)
                     for name, step in self.steps.items()]
        timings = bc.time_interleaved(variants, rounds=rounds, warmup=warmup, target_s=0)
        jax_s = timings["jax"].median
        flops = self.case.flops_per_sample * self.batch
        return [{"width": self.width, "dtype": self.dtype, "batch": self.batch,
                 "impl": name, "compile_s": self.case.compile_s if name == "jax" else None,
                 "first_call_s": self.first_call_s.get(name), "ms": 1e3 * t.median,
                 "iqr_pct": 100 * (t.p75 - t.p25) / t.median,
                 "samples_per_s": self.batch / t.median, "over_jax": t.median / jax_s,
                 "gflops_per_s": flops / t.median / 1e9, **fields, **t.as_dict()}
                for name, t in timings.items()]


def bench_twin_case(torch, device: str, mesh: Any, *, width: float, dtype: str, batch: int,
                    seconds: float, frames: int, compile_: str, rounds: int, warmup: int,
                    state: Any = None) -> tuple[list[dict[str, Any]], Any]:
    """Rows (jax, torch, torch.compile) of one case, and its host initial state (for the next
    case of this width); the logits check on the first case of a width (`state` None)."""
    tc = TwinCase(torch, device, mesh, width=width, dtype=dtype, batch=batch, seconds=seconds,
                  frames=frames, state=state)
    tc.add("torch", None)
    if compile_ != "none":
        tc.add("torch.compile", compile_)
    error = tc.logits_error() if state is None else None  # float32 either way: once per width
    return tc.rows(rounds=rounds, warmup=warmup, twin_logits_rel_err=error), tc.case.initial


def bench_twin(mesh: Any, *, widths: list[float], dtypes: list[str], batches: list[int],
               seconds: float, frames: int, compile_: str, rounds: int, warmup: int,
               notes: list[str]) -> list[dict[str, Any]]:
    """Section "twin": every width x dtype x batch on one device (`mesh` has one; torch uses
    the same kind of device)."""
    from tools.fbp_bench.torch_twin import torch_device_for

    torch, device = torch_device_for(jax.default_backend(), notes)
    if torch is None:
        return []
    notes.append(f"twin: torch {torch.__version__} on {device}, {torch.get_num_threads()} "
                 f"threads; torch.compile backend {compile_}; XLA_FLAGS "
                 f"{os.environ.get('XLA_FLAGS', '')!r}")
    rows = []
    for width in widths:
        state = None
        for b in batches:
            for dtype in dtypes:
                case_rows, state = bench_twin_case(
                    torch, device, mesh, width=width, dtype=dtype, batch=b, seconds=seconds,
                    frames=frames, compile_=compile_, rounds=rounds, warmup=warmup, state=state)
                rows += case_rows
                print(f"  twin: width {width} {dtype} batch {b} done", flush=True)
    return rows
