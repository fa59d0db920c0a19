"""Recompilation check of bench_train: the jitted train step warmed up on every bucket shape, then
run on shuffled bucket-shaped batches while XLA compilations are counted (must be 0)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from avfbp_jax.data.cache import pcm16
from avfbp_jax.data.loader import bucket_shapes
from avfbp_jax.models.model import example_batch
from avfbp_jax.train import parallel
from tools import bench_common as bc
from tools.train_bench.step_case import StepCase, make_model_config

SAMPLE_RATE = 16000  # of the example batches when no cache says otherwise


def warm_up(cfg: Any, mesh: Any, batch: int, shapes: Sequence[tuple[int, int]],
            sample_rate: int, *, pcm: bool) -> tuple[Callable, Any, list[dict], float]:
    """The jitted train step of `cfg` run once on an example batch of each (samples, frames)
    shape, so that every shape is compiled; audio as the loader's int16 when `pcm`.

    Returns (step, state, the device batches, seconds of the warm-up).
    """
    examples = []
    for i, (samples, frames) in enumerate(shapes):
        example = example_batch(cfg, batch, samples / sample_rate, frames, seed=i)
        if pcm:
            example["audio"] = pcm16(example["audio"])
        examples.append(parallel.shard_batch(example, mesh))
    case = StepCase(cfg, mesh, batch, shapes[0][0] / sample_rate, shapes[0][1], aot=False)
    step, state = case.jitted, case.state
    start = time.perf_counter()
    for x in examples:
        state, m = step(state, x)
    jax.block_until_ready(m)
    return step, state, examples, time.perf_counter() - start


def compiles_without_cache(mesh: Any, counter: bc.CompileCounter, *, batch: int,
                           buckets: Sequence[float], fps: float, width: float
                           ) -> dict[str, Any]:
    """Section "compiles" when no cache is given: bucket-shaped example batches, shuffled."""
    cfg = make_model_config("amfbp", "f32", width)
    shapes = bucket_shapes(buckets, SAMPLE_RATE, fps)
    step, state, batches, _ = warm_up(cfg, mesh, batch, shapes, SAMPLE_RATE, pcm=False)
    counter.reset()
    counter.counting = True
    order = np.random.default_rng(0).permutation(np.tile(np.arange(len(batches)), 2))
    for i in order:
        state, m = step(state, batches[i])
    jax.block_until_ready(m)
    counter.counting = False
    return {"batch": batch, "buckets": list(buckets), "warmup_shapes": len(shapes),
            "compiles_after_warmup": counter.count, "steps_after_warmup": len(order)}
