"""Evaluation of parameters on a split of the feature cache: WA, UA, macro-F1, confusion, loss.

The training loop evaluates with it during and after training, and `avfbp evaluate` evaluates a
saved checkpoint (`evaluate_checkpoint`); both give the same numbers for the same parameters.
"""

import os
from collections.abc import Callable

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from avfbp_jax.data.cache import FeatureCache
from avfbp_jax.data.corpora import split_indices
from avfbp_jax.data.loader import eval_batches
from avfbp_jax.models.model import AVModel
from avfbp_jax.progress import Progress
from avfbp_jax.train import checkpoint, metrics, parallel, report
from avfbp_jax.train.modality_dropout import remove_modality
from avfbp_jax.train.step import make_eval_step

EVAL_DIR = "eval"


def split_of(cache: FeatureCache, data_config: ml_collections.ConfigDict, split: str) -> np.ndarray:
    """Cache indices of a split ("train", "val", "test") per the data config."""
    name = {"train": data_config.train_split, "val": data_config.val_split}.get(split, split)
    return split_indices(cache.records, name, test_session=data_config.test_session)


def evaluate(
    eval_step: Callable[[dict, dict], dict], params, cache: FeatureCache, indices: np.ndarray,
    config: ml_collections.ConfigDict, mesh: Mesh, label: str = "eval",
    without: str | None = None,
) -> dict:
    """WA, UA, macro-F1, per-class recall, confusion, mean loss and modality weights of the
    clips `indices`, every process taking its share of each batch; process 0 shows progress.
    without: "audio" or "faces" removes that modality from every clip (remove_modality)."""
    batch_size = config.train.eval_batch_size
    parallel.local_batch_size(batch_size, mesh)
    batches = eval_batches(
        cache, indices, batch_size, buckets=config.data.buckets,
        process_index=jax.process_index(), process_count=jax.process_count(),
    )
    progress = None
    if jax.process_index() == 0:
        progress = Progress(-(-len(indices) // batch_size), label, unit="batches")
    outputs = []
    for batch in batches:
        if without:
            batch = remove_modality(batch, without)
        outputs.append(jax.device_get(eval_step(params, parallel.shard_batch(batch, mesh))))
        if progress is not None:
            progress.update()
    if progress is not None:
        progress.close()
    out = {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}
    keep = out["weight"] > 0
    out = {k: v[keep] for k, v in out.items()}
    result = metrics.classification_metrics(out["label"], out["logits"].argmax(-1), cache.classes)
    result["loss"] = float(out["loss"].mean())
    if "modality_weights" in out:
        result["modality_weights"] = metrics.modality_weights_by_class(
            out["label"], out["modality_weights"], cache.classes)
    if "trunk_modality_weights" in out:
        result["trunk_modality_weights"] = metrics.modality_weights_by_class(
            out["label"], out["trunk_modality_weights"], cache.classes,
            out.get("trunk_has_data"))
    return result


def eval_name(split: str, step: int, without: str | None = None) -> str:
    """The file stem of an evaluation in WORKDIR/eval."""
    return f"{split}-step{step}" + (f"-without-{without}" if without else "")


def evaluate_checkpoint(workdir: str, step: int | None, split: str,
                        num_devices: int = 0, without: str | None = None) -> dict:
    """Metrics of one checkpoint of a training workdir (the one `checkpoint.resolve_step` picks:
    the best by the validation metric unless `step` is given) on one split, with "step" and
    "classes", optionally `without` one modality. Process 0 writes
    WORKDIR/eval/<split>-step<STEP>[-without-<MODALITY>].json and .png (confusion)."""
    params, config = checkpoint.load_for_inference(workdir, step)
    step = checkpoint.resolve_step(workdir, step)
    cache = FeatureCache(config.data.cache_dir, in_memory=False,
                         frame_input=config.data.frame_input)
    indices = split_of(cache, config.data, split)
    if len(indices) == 0:
        raise ValueError(f"{config.data.cache_dir}: the {split} split is empty")
    mesh = parallel.make_mesh(num_devices)
    model = AVModel(config=config.model)
    params = parallel.replicate(params, mesh)
    result = evaluate(make_eval_step(model, mesh), params, cache, indices, config, mesh, split,
                      without)
    result["step"] = step
    if jax.process_index() == 0:
        out = os.path.join(workdir, EVAL_DIR)
        os.makedirs(out, exist_ok=True)
        name = os.path.join(out, eval_name(split, step, without))
        report.write_json(name + ".json", result)
        missing = f", without {without}" if without else ""
        report.plot_confusion(name + ".png", result["confusion"], cache.classes,
                              f"{config.model.fusion}, {split} (step {step}{missing})")
    return result
