"""One compiled train step to time: the model config of a fusion, dtype and width, its state, a
device-resident example batch, XLA's FLOPs and device bytes of the compiled program."""

from __future__ import annotations

import time
from typing import Any

import jax

from avfbp_jax.models.config import model_config
from avfbp_jax.models.model import AVModel, example_batch
from avfbp_jax.train import optimizer, parallel, perf
from avfbp_jax.train.config import train_config
from avfbp_jax.train.state import create_train_state
from avfbp_jax.train.step import make_train_step

MODEL_DTYPES = {"f32": "float32", "bf16": "bfloat16"}


def make_model_config(fusion: str, dtype: str, width: float, fbp_impl: str = "xla"):
    """model_config() with the fusion, compute dtype, width multiplier and FBP kernel applied."""
    cfg = model_config()
    cfg.fusion = fusion
    cfg.dtype = MODEL_DTYPES[dtype]
    cfg.fbp_impl = fbp_impl
    cfg.audio.width = cfg.audio.width * width
    cfg.video.cnn_channels = tuple(max(4, round(c * width)) for c in cfg.video.cnn_channels)
    return cfg


def device_bytes(mem: Any) -> int | None:
    """Device memory a compiled program needs by XLA's buffer assignment: arguments + outputs
    - donated (aliased) + temporaries + code; None where the backend reports no analysis."""
    if mem is None:
        return None
    return (mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
            + mem.temp_size_in_bytes + mem.generated_code_size_in_bytes)


class StepCase:
    """One compiled train step with its own state and a device-resident batch.

    Calling it runs one step (the state is donated and replaced) and returns the metrics. With
    aot=False nothing is compiled here (the jitted step compiles on first use).
    """

    def __init__(self, cfg, mesh, batch_size: int, seconds: float, frames: int,
                 aot: bool = True, state: Any = None):
        """state: a host copy of an initial state of this model (`self.initial`) to start from
        instead of initialising (which compiles the model's init)."""
        tcfg = train_config()
        model = AVModel(config=cfg)
        schedule = optimizer.make_schedule(tcfg)
        tx = optimizer.make_optimizer(tcfg, schedule)
        if state is None:
            # Parameters do not depend on the batch: initialise on one example (small compile).
            init_example = example_batch(cfg, 1, seconds, frames)
            state = jax.device_get(create_train_state(model, tx, init_example, seed=0,
                                                      mesh=mesh))
        self.initial = state
        self.state = parallel.replicate(state, mesh)
        self.host_batch = example_batch(cfg, batch_size, seconds, frames)  # numpy, for twins
        self.batch = parallel.shard_batch(self.host_batch, mesh)
        self.jitted = make_train_step(model, tx, schedule, mesh, seed=0,
                                      label_smoothing=tcfg.label_smoothing)
        if not aot:
            return
        start = time.perf_counter()
        lowered = self.jitted.lower(self.state, self.batch)
        self.compiled = lowered.compile()
        self.compile_s = time.perf_counter() - start
        # The compiled program is one device's share; the lowered one is the global program.
        self.flops_per_sample = perf.compiled_flops(self.compiled) * mesh.size / batch_size
        # None where jax has no cost analysis of the lowered program (PJRT plugins: the GPU).
        self.lowered_flops_per_sample = (perf.compiled_flops(lowered) / batch_size
                                         if lowered.cost_analysis() else None)
        self.device_bytes = device_bytes(self.compiled.memory_analysis())

    def __call__(self):
        self.state, metrics = self.compiled(self.state, self.batch)
        return metrics
