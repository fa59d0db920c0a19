"""The loader benchmark (bench_train's "loader" section and the device suite's "host" section):
TrainLoader's batches/s over a feature cache, read into memory and memory-mapped, and against
what the train step consumes on the same batches.

"cold" is the first pass over the cache, "warm" the steady state after it. Each row also gives
the bucket shapes used, the padding efficiency (real / padded audio samples) and the bytes per
sample of a batch (what goes host -> device).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import numpy as np

from avfbp_jax.data import cache as cache_format
from avfbp_jax.data.cache import FeatureCache
from avfbp_jax.data.config import data_config
from avfbp_jax.data.loader import TrainLoader, bucket_shapes
from avfbp_jax.train import parallel
from tools import bench_common as bc
from tools.train_bench.compiles import warm_up
from tools.train_bench.step_case import make_model_config


def measure_loader(cache: FeatureCache, batch_size: int, seconds: float,
                   buckets: Sequence[float], *, threads: int | None = None,
                   prefetch: int | None = None) -> dict[str, Any]:
    """Batches/s over the first pass (cold) and over `seconds` after it (warm), and the bytes
    per sample of a batch (by key in `bytes_per_sample_by_key`).

    threads, prefetch: TrainLoader's (default: data_config()'s).
    """
    d = data_config()
    loader = TrainLoader(cache, np.arange(len(cache)), batch_size, seed=0, buckets=buckets,
                         threads=threads or d.loader_threads, prefetch=prefetch or d.prefetch)
    start = time.perf_counter()
    real = padded = 0
    for _ in range(loader.steps_per_epoch):
        batch = next(loader)
        keep = batch["weight"] > 0
        real += int(batch["audio_len"][keep].sum())
        padded += int(keep.sum()) * batch["audio"].shape[1]
    cold = loader.steps_per_epoch / (time.perf_counter() - start)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        next(loader)
        count += 1
    warm = count / (time.perf_counter() - start)
    loader.close()
    by_key = {k: v.nbytes / batch_size for k, v in batch.items()}
    return {"batch_size": batch_size, "cold_batches_per_s": cold, "warm_batches_per_s": warm,
            "warm_samples_per_s": warm * batch_size, "steps_per_epoch": loader.steps_per_epoch,
            "shapes": loader.num_shapes, "padding_efficiency": real / max(padded, 1),
            "threads": loader.threads, "bytes_per_sample": sum(by_key.values()),
            "bytes_per_sample_by_key": by_key,
            "dtypes": {k: str(v.dtype) for k, v in batch.items()}}


def loader_rows(cache_dir: str, batch_sizes: Sequence[int], seconds: float,
                buckets: Sequence[float], *, threads: int | None = None,
                prefetch: int | None = None) -> Iterator[dict[str, Any]]:
    """`measure_loader` at each batch size, one row at a time, with the packed cache read into
    host memory (FeatureCache in_memory=True, the default) and memory-mapped (in_memory=False,
    for caches larger than memory; the page cache is warm after the first pass)."""
    for in_memory in (True, False):
        cache = FeatureCache(cache_dir, in_memory=in_memory)
        for b in batch_sizes:
            row = {**measure_loader(cache, b, seconds, buckets, threads=threads,
                                    prefetch=prefetch), "in_memory": in_memory}
            print(f"  loader batch {b} (in_memory={in_memory}): "
                  f"{row['warm_samples_per_s']:.0f} samples/s warm, "
                  f"{row['bytes_per_sample']:.0f} bytes/sample", flush=True)
            yield row


def cache_description(cache_dir: str) -> dict[str, Any]:
    """Clips and packed bytes of a cache."""
    size = sum(e.stat().st_size for e in os.scandir(os.path.join(cache_dir, cache_format.PACKED)))
    return {"cache": cache_dir, "clips": len(FeatureCache(cache_dir)), "cache_bytes": size}


def loader_vs_step(cache_dir: str, mesh: Any, counter: bc.CompileCounter, *, batch: int,
                   batches: int, buckets: Sequence[float], width: float,
                   loader_samples_per_s: float) -> dict[str, Any]:
    """The amfbp f32 step on `batches` of the loader's batches (after a warm-up on every bucket
    shape, compilations counted: must be 0), and the loader feeding the step in a loop; the
    loader's own rate (`loader_samples_per_s`, from `measure_loader`) over the step's."""
    cache = FeatureCache(cache_dir)
    indices = np.arange(len(cache))
    n = max(batches, 1)
    loader = TrainLoader(cache, indices, batch, seed=0, buckets=buckets)
    host = [next(loader) for _ in range(n)]
    loader.close()
    shapes = sorted({(x["audio"].shape[1], x["frames"].shape[1]) for x in host})
    all_shapes = bucket_shapes(buckets, cache.sample_rate, cache.fps)
    cfg = make_model_config("amfbp", "f32", width)
    step, state, _, warmup_s = warm_up(cfg, mesh, batch, all_shapes, cache.sample_rate, pcm=True)

    counter.reset()
    counter.counting = True
    device_batches = [parallel.shard_batch(x, mesh) for x in host]
    start = time.perf_counter()
    for x in device_batches:
        state, m = step(state, x)
    jax.block_until_ready(m)
    step_s = time.perf_counter() - start
    # The real loop: the loader feeding the step (prefetch overlaps with the step).
    loader = TrainLoader(cache, indices, batch, seed=1, buckets=buckets)
    start = time.perf_counter()
    for _ in range(n):
        state, m = step(state, parallel.shard_batch(next(loader), mesh))
    jax.block_until_ready(m)
    loop_s = time.perf_counter() - start
    loader.close()
    counter.counting = False
    step_rate = n * batch / step_s
    return {"batch": batch, "batches": n, "shapes_seen": [list(s) for s in shapes],
            "step_samples_per_s": step_rate, "loop_samples_per_s": n * batch / loop_s,
            "loader_samples_per_s": loader_samples_per_s,
            "loader_over_step": loader_samples_per_s / step_rate,
            "warmup_shapes": len(all_shapes), "warmup_compile_s": warmup_s,
            "compiles_after_warmup": counter.count, "steps_after_warmup": 2 * n}
