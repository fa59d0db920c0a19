"""Device suite section "e2e": experiments/large_batch.py through train_and_evaluate for a few
hundred steps on the corpus section's cache."""

from __future__ import annotations

import os
import time

from avfbp_jax.data.cache import FeatureCache
from avfbp_jax.data.loader import TrainLoader
from avfbp_jax.models.config import tiny_model_config
from avfbp_jax.train import loop
from avfbp_jax.train.experiment import apply_overrides, load_config_file
from tools import REPO
from tools.device.part import Part, read_json
from tools.device.plan import Plan


def run(plan: Plan, part: Part, *, work: str, commit: str) -> None:
    """experiments/large_batch.py through train_and_evaluate for `e2e_steps` steps on the corpus
    cache (its inputs: 64x64 crops at 10 frames/s, one 4 s bucket; loader threads = cores;
    one evaluation at the end); samples/s from WORKDIR/metrics.json's "throughput"."""
    cache_dir = os.path.join(work, "cache")
    n = plan.e2e_steps
    overrides = [f"data.corpus_dir={os.path.join(work, 'corpus')}", f"data.cache_dir={cache_dir}",
                 f"data.buckets=({plan.seconds},)", "data.crop_size=64",
                 f"data.fps={plan.frames / plan.seconds}", "model.video.crop_size=64",
                 f"data.loader_threads={plan.loader_threads}",
                 f"data.prefetch={plan.loader_threads}",
                 f"train.batch_size={plan.e2e_batch}", f"train.eval_batch_size={plan.e2e_batch}",
                 f"train.num_steps={n}", f"train.eval_every={n}", f"train.checkpoint_every={n}",
                 f"train.log_every={max(1, n // 10)}", *plan.e2e_overrides]
    config = load_config_file(os.path.join(REPO, "experiments", "large_batch.py"))
    apply_overrides(config, [f"--config.{o}" for o in overrides])
    if plan.dry_run:  # the smallest model that runs every code path
        config.model = tiny_model_config(config.model.fusion, dtype=config.model.dtype)
    part.update(experiment="experiments/large_batch.py", overrides=overrides, steps=n,
                batch=plan.e2e_batch, dtype=config.model.dtype, fusion=config.model.fusion)
    cache = FeatureCache(cache_dir)
    train = loop.split_of(cache, config.data, "train")
    plan0 = TrainLoader(cache, train, plan.e2e_batch, seed=0, buckets=(plan.seconds,)).plan(0)
    part["train_clips"] = len(train)
    part["padding_fraction"] = 1 - sum(real for *_, real in plan0) / (len(plan0) * plan.e2e_batch)
    part.save()
    workdir = os.path.join(work, "e2e")
    start = time.time()
    results = loop.train_and_evaluate(config, workdir)
    part["wall_s_run"] = time.time() - start
    metrics = read_json(os.path.join(workdir, loop.METRICS_FILE))
    part["val_wa"] = results.get("val", {}).get("wa")
    part["test_wa"] = results.get("test", {}).get("wa")
    part["train_time_s"] = metrics.get("train_time_s")
    part["throughput"] = metrics["throughput"]  # compilation and evaluation excluded
    part["samples_per_s"] = metrics["throughput"]["samples_per_s"]
