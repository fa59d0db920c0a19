"""Device suite section "host": the loader benchmark (tools.train_bench.loader) on this machine's
cores over the corpus cache, and the host->device rate of a real batch."""

from __future__ import annotations

import os
import time

import jax

from avfbp_jax.data.cache import FeatureCache
from avfbp_jax.data.loader import TrainLoader
from avfbp_jax.train import parallel
from tools.device.part import Part
from tools.device.plan import Plan
from tools.train_bench.loader import loader_rows


def run(plan: Plan, part: Part, *, work: str, commit: str) -> None:
    """Loader samples/s on this machine's cores over the corpus cache (one bucket: the step's
    input length, so each batch has the step benchmark's shapes), read into memory and
    memory-mapped, the bytes per sample of a real batch, and the host->device rate of such a
    batch."""
    cache_dir = os.path.join(work, "cache")
    part.update(clips=len(FeatureCache(cache_dir)), threads=plan.loader_threads, rows=[])
    for row in loader_rows(cache_dir, plan.loader_batches, plan.loader_seconds, (plan.seconds,),
                           threads=plan.loader_threads, prefetch=plan.loader_threads):
        part["rows"].append(row)
        part.save()
    # host -> device: one real batch of the largest size, put on the device and waited for
    b = max(plan.loader_batches)
    cache = FeatureCache(cache_dir)
    loader = TrainLoader(cache, range(len(cache)), b, seed=0, buckets=(plan.seconds,))
    batch = next(loader)
    loader.close()
    mesh = parallel.make_mesh(1)
    nbytes = sum(v.nbytes for v in batch.values())
    jax.block_until_ready(parallel.shard_batch(batch, mesh))  # warm-up
    times = []
    for _ in range(5):
        start = time.perf_counter()
        jax.block_until_ready(parallel.shard_batch(batch, mesh))
        times.append(time.perf_counter() - start)
    t = sorted(times)[len(times) // 2]
    part["h2d"] = {"batch": b, "bytes": nbytes, "median_s": t, "gb_per_s": nbytes / t / 1e9,
                   "samples_per_s": b / t}
