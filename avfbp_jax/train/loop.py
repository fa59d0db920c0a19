"""train_and_evaluate(config, workdir): the whole training run, resumable from its workdir.

Rerunning with the same workdir continues from the latest checkpoint (state, optimizer, step and
loader position), so a killed run ends with the same parameters as an uninterrupted one. Ctrl-C
or SIGTERM stops a run at the next step, which is saved first, so such a run loses no step.
"""

import json
import logging
import os
import signal
import time

import jax
import ml_collections
import numpy as np

from avfbp_jax import interrupt
from avfbp_jax.data.cache import FeatureCache
from avfbp_jax.data.corpora import split_indices
from avfbp_jax.data.loader import TrainLoader, eval_batches
from avfbp_jax.models.model import AVModel, example_batch, frozen_paths, load_pretrained
from avfbp_jax.train import checkpoint, metrics, optimizer, parallel, perf, report
from avfbp_jax.train.config import RunSetupError
from avfbp_jax.train.data import ensure_cache
from avfbp_jax.train.state import abstract_train_state, copy_matching_params, create_train_state
from avfbp_jax.train.step import CompiledStep, make_eval_step, make_train_step

HISTORY_FILE = "history.json"
METRICS_FILE = "metrics.json"


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or inf; the run stops and keeps its last good checkpoint."""


def split_of(cache: FeatureCache, data_config: ml_collections.ConfigDict, split: str) -> np.ndarray:
    """Cache indices of a split ("train", "val", "test") per the data config."""
    name = {"train": data_config.train_split, "val": data_config.val_split}.get(split, split)
    return split_indices(cache.records, name, test_session=data_config.test_session)


def evaluate(
    eval_step, params, cache: FeatureCache, indices: np.ndarray, config: ml_collections.ConfigDict,
    mesh, label: str = "eval",
) -> dict:
    """WA, UA, macro-F1, per-class recall, confusion, mean loss and modality weights of a split."""
    batch_size = config.train.eval_batch_size
    parallel.local_batch_size(batch_size, mesh)
    num_batches = -(-len(indices) // batch_size)
    bar = report.ProgressBar(num_batches, label) if jax.process_index() == 0 else None
    outputs = []
    batches = eval_batches(
        cache, indices, batch_size, buckets=config.data.buckets,
        process_index=jax.process_index(), process_count=jax.process_count(),
    )
    for i, batch in enumerate(batches):
        out = eval_step(params, parallel.shard_batch(batch, mesh))
        outputs.append(jax.device_get(out))
        if bar:
            bar.update(i + 1)
    if bar:
        bar.close()
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


class _History:
    """Logged scalars per step, kept in WORKDIR/history.json across restarts (for curves.png)."""

    def __init__(self, workdir: str, resume_step: int):
        self.path = os.path.join(workdir, HISTORY_FILE)
        self.data: dict[str, list] = {}
        if resume_step and os.path.exists(self.path):
            with open(self.path) as f:
                saved = json.load(f)
            self.data = {k: [p for p in v if p[0] <= resume_step] for k, v in saved.items()}

    def add(self, step: int, values: dict) -> None:
        for k, v in values.items():
            self.data.setdefault(k, []).append((step, float(v)))

    def write(self) -> None:
        report.write_json(self.path, self.data)


def _check_finite(step: int, values: dict, checkpointer: checkpoint.Checkpointer) -> None:
    loss = float(values["loss"])
    if not np.isfinite(loss) or values["finite"] < 1:
        checkpointer.wait()
        last = checkpointer.latest_step()
        raise NonFiniteLossError(
            f"training became non-finite at step {step} (loss {loss}); stopping. The last good "
            "checkpoint is "
            f"{'step ' + str(last) if last is not None else 'none'} in {checkpointer.directory}. "
            "Lower train.learning_rate or raise train.warmup_steps / set train.grad_clip_norm."
        )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains, checkpoints and evaluates; returns {"val": metrics, "test": metrics, ...}."""
    tc = config.train
    trace = perf.StepTrace(tuple(tc.profile_steps), os.path.join(workdir, "profile"))
    if tc.compilation_cache_dir:  # JAX's persistent cache: later runs skip compiling
        jax.config.update("jax_compilation_cache_dir", os.path.abspath(tc.compilation_cache_dir))
    parallel.initialize_distributed(tc)
    lead = jax.process_index() == 0
    ensure_cache(config.data)
    cache = FeatureCache(config.data.cache_dir, in_memory=config.data.in_memory,
                         frame_input=config.data.frame_input)
    if config.model.num_classes != len(cache.classes):
        raise RunSetupError(f"model.num_classes={config.model.num_classes} but the cache "
                            f"{config.data.cache_dir} has {len(cache.classes)} classes")
    splits = {s: split_of(cache, config.data, s) for s in ("train", "val", "test")}
    if len(splits["train"]) == 0:
        raise RunSetupError(f"{config.data.cache_dir}: no clips in the training split")

    mesh = parallel.make_mesh(tc.num_devices)
    parallel.local_batch_size(tc.batch_size, mesh)
    model = AVModel(config=config.model)
    schedule = optimizer.make_schedule(tc)
    tx = optimizer.make_optimizer(tc, schedule, (*tc.frozen, *frozen_paths(config.model)))
    example = example_batch(config.model, 1, seconds=min(config.data.buckets),
                            num_frames=int(np.ceil(min(config.data.buckets) * cache.fps)))
    checkpointer = checkpoint.Checkpointer(
        workdir, keep=tc.keep, best_metric=tc.keep_best, async_save=tc.async_checkpointing)
    start = checkpointer.latest_step()
    if start is not None and os.path.exists(os.path.join(workdir, checkpoint.CONFIG_FILE)):
        checkpoint.check_same_run(workdir, config)  # resume only the same run
    if lead:
        checkpoint.save_config(workdir, config)
    loader = TrainLoader(
        cache, splits["train"], tc.batch_size, seed=config.seed, buckets=config.data.buckets,
        process_index=jax.process_index(), process_count=jax.process_count(),
        prefetch=config.data.prefetch, threads=config.data.loader_threads,
    )

    if start is not None:
        state, loader_state = checkpointer.restore(
            start, abstract_train_state(model, tx, example, mesh))
        loader.set_state(loader_state)
        logging.info("resumed from step %d", start)
    else:
        state = create_train_state(model, tx, example, config.seed, mesh)
        params = state.params
        if tc.init_from:
            source, _ = checkpoint.load_for_inference(tc.init_from)
            params = copy_matching_params(params, source, tuple(tc.init_prefixes))
        params = load_pretrained(params, config.model)  # the frozen FER encoder, if used
        if params is not state.params:
            params = parallel.replicate(params, mesh)
            state = parallel.replicate(
                state.replace(params=params, opt_state=tx.init(params)), mesh)
    start = int(state.step)
    train_step = CompiledStep(make_train_step(model, tx, schedule, mesh, seed=config.seed,
                                              label_smoothing=tc.label_smoothing))
    meter = perf.ThroughputMeter(
        tc.batch_size, *perf.peak_tflops(mesh.devices.flat[0], config.model.dtype, tc.peak_tflops))
    eval_step = make_eval_step(model, mesh)
    history = _History(workdir, start)
    tb = report.TensorBoard(os.path.join(workdir, "tb"), enabled=lead)

    def validate(step):
        result = evaluate(eval_step, state.params, cache, splits["val"], config, mesh, "  val")
        values = {"val/wa": result["wa"], "val/ua": result["ua"],
                  "val/macro_f1": result["macro_f1"], "val/loss": result["loss"]}
        tb.scalars(step, values)
        history.add(step, values)
        return values

    pending = []  # on-device metrics since the last log
    step, stopping = start, False
    # Ctrl-C / SIGTERM: finish the step, save it (data position included) and stop; the same
    # step on every process. A second signal exits at once. The "steps" line is printed once
    # this is in force, so a signal after it always stops at a step boundary.
    with interrupt.StepStop() as stop:
        if lead:
            print(f"training {config.model.fusion} on {len(splits['train'])} clips "
                  f"({loader.steps_per_epoch} steps/epoch, {loader.num_shapes} batch shapes) "
                  f"over {mesh.size} device(s), steps {start}..{tc.num_steps}", flush=True)
        bar = report.ProgressBar(tc.num_steps, "train", start=start) if lead else None
        t0 = time.perf_counter()
        while step < tc.num_steps and not stopping:
            batch = parallel.shard_batch(next(loader), mesh)
            trace.before(step + 1)
            state, step_metrics = train_step(state, batch)
            step += 1
            trace.after(step, state)
            meter.add(train_step.last_flops)
            meter.exclude(train_step.last_compile_s)
            pending.append(step_metrics)
            stopping = stop.reached(step)
            is_last = step == tc.num_steps
            do_eval = is_last or (tc.eval_every and step % tc.eval_every == 0)
            do_save = (do_eval or stopping
                       or (tc.checkpoint_every and step % tc.checkpoint_every == 0))
            if step % tc.log_every == 0 or do_save:
                means = {k: float(np.mean([float(m[k]) for m in pending])) for k in pending[-1]}
                means["finite"] = min(float(m["finite"]) for m in pending)
                pending = []
                _check_finite(step, means, checkpointer)
                rates = meter.window()
                train_values = {f"train/{k}": v for k, v in means.items() if k != "finite"}
                train_values.update({f"perf/{k}": v for k, v in rates.items()})
                tb.scalars(step, train_values)
                history.add(step, train_values)
                if bar:
                    speed = (f" {rates['samples_per_s']:.1f} samples/s "
                             f"{rates['tflops_per_device']:.3g} TFLOP/s/device "
                             f"{100 * rates['utilization']:.1f}% MFU") if rates else ""
                    bar.update(step, f"loss {means['loss']:.3f} acc {means['accuracy']:.2f}"
                                     f"{speed}")
            if do_eval:
                if bar:
                    bar.close()
                values = validate(step)
                if lead:
                    print(f"step {step}: val WA {values['val/wa']:.4f} UA {values['val/ua']:.4f} "
                          f"loss {values['val/loss']:.4f}", flush=True)
                checkpointer.save(step, state, loader.get_state(), metrics=values)
            elif do_save:
                checkpointer.save(step, state, loader.get_state())
            if do_save:
                meter.restart()  # evaluation and saving are not training time
            if lead and (do_save or step % tc.log_every == 0):
                history.write()
            if step == tc.kill_at_step:
                os.kill(os.getpid(), signal.SIGKILL)
        if bar:
            bar.close()
        train_time = time.perf_counter() - t0
        throughput = meter.summary(train_step.compile_s)
        loader.close()
        checkpointer.wait()  # a signal now still waits for the last save
        if stopping or stop.requested():
            checkpointer.close()
            tb.close()
            raise stop.interrupted(f"interrupted at step {step}; checkpoint saved; run the same "
                                   "command to resume")
    best = checkpointer.best_step()
    checkpointer.close()

    results = {}
    for split in ("val", "test"):
        if len(splits[split]):
            results[split] = evaluate(eval_step, state.params, cache, splits[split], config, mesh,
                                      f"  {split}")
    if lead:
        summary = {
            "step": int(state.step), "best_step": best, "train_time_s": train_time,
            "fusion": config.model.fusion, "num_devices": mesh.size, "throughput": throughput,
            **results,
        }
        report.write_json(os.path.join(workdir, METRICS_FILE), summary)
        history.write()
        last = "test" if "test" in results else "val"
        if results:
            report.plot_confusion(os.path.join(workdir, "confusion.png"),
                                  results[last]["confusion"], cache.classes,
                                  f"{config.model.fusion}, {last} (step {int(state.step)})")
        report.plot_curves(os.path.join(workdir, "curves.png"), history.data)
        print(perf.describe(throughput), flush=True)
        print(report.summary(
            results, cache.classes,
            f"{config.model.fusion}: {int(state.step)} steps, {train_time:.0f} s training, "
            f"workdir {workdir}"), flush=True)
    tb.close()
    return results
