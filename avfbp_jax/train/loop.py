"""train_and_evaluate(config, workdir): the whole training run, resumable from its workdir.

In three parts, as MaxText's train.py: `setup` builds what the run needs (cache, mesh, model,
optimizer, checkpointer, loader, the restored or new train state, metric writers, the log file),
`train_loop` takes the steps with their periodic logging, validation and saves, and `finish`
evaluates the last step and the checkpoint that `avfbp export` / `avfbp evaluate` load, then
writes the report.

Rerunning with the same workdir continues from the latest checkpoint (state, optimizer, step and
loader position), so a killed run ends with the same parameters as an uninterrupted one. Ctrl-C
or SIGTERM stops a run at the next step, which is saved first, so such a run loses no step.

WORKDIR after a run: config.json, environment.json (versions, git commit; per start),
train.log (the Python log; other processes write train.process<i>.log), history.jsonl and tb/
(the scalars), checkpoints/, metrics.json, confusion.png and curves.png.
"""

import contextlib
import dataclasses
import logging
import os
import signal
import time
from collections.abc import Callable

import jax
import ml_collections
import numpy as np

from avfbp_jax import interrupt
from avfbp_jax.data.cache import FeatureCache
from avfbp_jax.data.loader import TrainLoader
from avfbp_jax.models.model import AVModel, example_batch, frozen_paths, load_pretrained
from avfbp_jax.progress import Progress
from avfbp_jax.train import checkpoint, environment, optimizer, parallel, perf, report
from avfbp_jax.train.config import RunSetupError, validate
from avfbp_jax.train.data import ensure_cache
from avfbp_jax.train.evaluation import evaluate, split_of
from avfbp_jax.train.metric_writers import (
    HISTORY_FILE,
    MetricWriter,
    create_default_writer,
    read_history,
)
from avfbp_jax.train.periodic import itstime
from avfbp_jax.train.state import (
    TrainState,
    abstract_train_state,
    copy_matching_params,
    create_train_state,
)
from avfbp_jax.train.step import CompiledStep, make_eval_step, make_train_step

METRICS_FILE = "metrics.json"
LOG_FILE = "train.log"
SPLITS = ("train", "val", "test")

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or inf; the run stops and keeps its last good checkpoint."""


@dataclasses.dataclass
class Run:
    """What `setup` builds for `train_loop` and `finish`; closing it releases the loader, the
    checkpointer, the metric writers and the log file."""

    config: ml_collections.ConfigDict
    workdir: str
    cache: FeatureCache
    splits: dict[str, np.ndarray]
    mesh: jax.sharding.Mesh
    loader: TrainLoader
    checkpointer: checkpoint.Checkpointer
    state: TrainState
    abstract_state: TrainState  # restore target (shapes and shardings)
    train_step: CompiledStep
    eval_step: Callable[[dict, dict], dict]
    meter: perf.ThroughputMeter
    trace: perf.StepTrace
    writer: MetricWriter
    resources: contextlib.ExitStack

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc) -> None:
        self.resources.close()


def _log_to_file(workdir: str) -> logging.Handler:
    """Adds a handler writing the Python log to WORKDIR/train.log (appended across restarts)."""
    index = jax.process_index()
    name = LOG_FILE if index == 0 else f"train.process{index}.log"
    handler = logging.FileHandler(os.path.join(workdir, name))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def _close_log(handler: logging.Handler) -> None:
    logging.getLogger().removeHandler(handler)
    handler.close()


def _load_data(config: ml_collections.ConfigDict) -> tuple[FeatureCache, dict]:
    """The feature cache (prepared now if missing) and its train / val / test indices."""
    ensure_cache(config.data)
    cache = FeatureCache(config.data.cache_dir, in_memory=config.data.in_memory,
                         frame_input=config.data.frame_input)
    if config.model.num_classes != len(cache.classes):
        raise RunSetupError(f"model.num_classes={config.model.num_classes} but the cache "
                            f"{config.data.cache_dir} has {len(cache.classes)} classes")
    splits = {s: split_of(cache, config.data, s) for s in SPLITS}
    if len(splits["train"]) == 0:
        raise RunSetupError(f"{config.data.cache_dir}: no clips in the training split")
    return cache, splits


def _new_state(model: AVModel, tx, example: dict, config: ml_collections.ConfigDict,
               mesh: jax.sharding.Mesh) -> TrainState:
    """A fresh train state; train.init_from and pretrained parts (the FER encoder, the audio
    FCN's ImageNet init) copied in. A missing source is a RunSetupError (one line)."""
    state = create_train_state(model, tx, example, config.seed, mesh)
    params = state.params
    if config.train.init_from:
        try:
            source, _ = checkpoint.load_for_inference(config.train.init_from)
        except FileNotFoundError as e:
            raise RunSetupError(f"config.train.init_from: {e}") from None
        params = copy_matching_params(params, source, tuple(config.train.init_prefixes))
    try:
        params = load_pretrained(params, config.model)
    except FileNotFoundError as e:
        raise RunSetupError(str(e)) from None
    if params is state.params:
        return state
    params = parallel.replicate(params, mesh)
    return parallel.replicate(state.replace(params=params, opt_state=tx.init(params)), mesh)


def setup(config: ml_collections.ConfigDict, workdir: str) -> Run:
    """Everything a run needs, resumed from the workdir's latest checkpoint if it has one."""
    validate(config)
    tc = config.train
    trace = perf.StepTrace(tuple(tc.profile_steps), os.path.join(workdir, "profile"))
    if tc.compilation_cache_dir:  # JAX's persistent cache: later runs skip compiling
        jax.config.update("jax_compilation_cache_dir", os.path.abspath(tc.compilation_cache_dir))
    parallel.initialize_distributed(tc)
    lead = jax.process_index() == 0
    os.makedirs(workdir, exist_ok=True)
    with contextlib.ExitStack() as resources:
        resources.callback(_close_log, _log_to_file(workdir))
        cache, splits = _load_data(config)
        mesh = parallel.make_mesh(tc.num_devices)
        parallel.local_batch_size(tc.batch_size, mesh)
        model = AVModel(config=config.model)
        schedule = optimizer.make_schedule(tc)
        tx = optimizer.make_optimizer(tc, schedule, (*tc.frozen, *frozen_paths(config.model)))
        seconds = min(config.data.buckets)
        example = example_batch(config.model, 1, seconds=seconds,
                                num_frames=int(np.ceil(seconds * cache.fps)))
        checkpointer = checkpoint.Checkpointer(
            workdir, keep=tc.keep, best_metric=tc.keep_best, async_save=tc.async_checkpointing)
        resources.callback(checkpointer.close)
        start = checkpointer.latest_step()
        if start is not None and os.path.exists(os.path.join(workdir, checkpoint.CONFIG_FILE)):
            checkpoint.check_same_run(workdir, config)  # resume only the same run
        if lead:
            checkpoint.save_config(workdir, config)
            checkpoint.save_classes(workdir, cache.classes)
            info = environment.write_environment(workdir)
            logger.info("avfbp_jax %s, git commit %s, on %d %s device(s)",
                        info["versions"]["avfbp_jax"], info["git_commit"],
                        info["devices"]["count"], info["devices"]["kind"])
        loader = TrainLoader(
            cache, splits["train"], tc.batch_size, seed=config.seed, buckets=config.data.buckets,
            process_index=jax.process_index(), process_count=jax.process_count(),
            prefetch=config.data.prefetch, threads=config.data.loader_threads,
        )
        resources.callback(loader.close)
        abstract_state = abstract_train_state(model, tx, example, mesh)
        if start is not None:
            state, loader_state = checkpointer.restore(start, abstract_state)
            loader.set_state(loader_state)
            logger.info("resumed from step %d", start)
        else:
            state = _new_state(model, tx, example, config, mesh)
        writer = create_default_writer(workdir, just_logging=not lead, start=int(state.step))
        resources.callback(writer.close)
        return Run(
            config=config, workdir=workdir, cache=cache, splits=splits, mesh=mesh,
            loader=loader, checkpointer=checkpointer, state=state, abstract_state=abstract_state,
            train_step=CompiledStep(make_train_step(
                model, tx, schedule, mesh, seed=config.seed, label_smoothing=tc.label_smoothing,
                modality_dropout=tc.modality_dropout,
                modality_dropout_start=tc.modality_dropout_start)),
            eval_step=make_eval_step(model, mesh),
            meter=perf.ThroughputMeter(tc.batch_size, *perf.peak_tflops(
                mesh.devices.flat[0], config.model.dtype, tc.peak_tflops)),
            trace=trace, writer=writer, resources=resources.pop_all(),
        )


def _progress(run: Run, step: int) -> Progress | None:
    """The training progress display from `step` on, on process 0 only."""
    if jax.process_index() != 0:
        return None
    return Progress(run.config.train.num_steps, "train", unit="steps", start=step)


def _write_train_scalars(run: Run, step: int, pending: list[dict]) -> str:
    """Writes the means of the steps' metrics since the last write and the throughput window's
    rates; returns them as progress text. Raises NonFiniteLossError (once the running save is
    done) if the loss became non-finite."""
    means = {k: float(np.mean([float(m[k]) for m in pending])) for k in pending[-1]}
    finite = min(float(m["finite"]) for m in pending)
    del means["finite"]
    if not np.isfinite(means["loss"]) or finite < 1:
        run.checkpointer.wait()
        last = run.checkpointer.latest_step()
        raise NonFiniteLossError(
            f"training became non-finite at step {step} (loss {means['loss']}); stopping. The "
            "last good checkpoint is "
            f"{'step ' + str(last) if last is not None else 'none'} in "
            f"{run.checkpointer.directory}. Lower train.learning_rate or raise "
            "train.warmup_steps / set train.grad_clip_norm."
        )
    rates = run.meter.window()
    run.writer.write_scalars(step, {**{f"train/{k}": v for k, v in means.items()},
                                    **{f"perf/{k}": v for k, v in rates.items()}})
    run.writer.flush()
    text = f"loss {means['loss']:.3f} acc {means['accuracy']:.2f}"
    if rates:
        text += (f" {rates['samples_per_s']:.1f} samples/s {rates['tflops_per_device']:.3g} "
                 f"TFLOP/s/device {100 * rates['utilization']:.1f}% MFU")
    return text


def _validate(run: Run, state: TrainState, step: int) -> dict:
    """Validation scalars of the current parameters, written to the metric writers."""
    result = evaluate(run.eval_step, state.params, run.cache, run.splits["val"], run.config,
                      run.mesh, "  val")
    values = {f"val/{k}": result[k] for k in ("wa", "ua", "macro_f1", "loss")}
    run.writer.write_scalars(step, values)
    run.writer.flush()
    return values


def train_loop(run: Run) -> tuple[TrainState, float, dict]:
    """Trains from the run's state to train.num_steps: (state, training seconds, throughput).

    Logs every train.log_every steps, validates and saves with the validation metrics every
    train.eval_every steps and at the end, saves every train.checkpoint_every steps. A signal
    stops it at a step boundary on every process: that step is saved, then `Interrupted` raised.
    """
    tc = run.config.train
    state, step = run.state, int(run.state.step)
    has_val = len(run.splits["val"]) > 0
    pending = []  # on-device metrics since the last write
    stopping = False
    # Ctrl-C / SIGTERM: finish the step, save it (data position included) and stop; the same
    # step on every process. A second signal exits at once. The "steps" line is printed once
    # this is in force, so a signal after it always stops at a step boundary.
    with interrupt.StepStop() as stop:
        if jax.process_index() == 0:
            print(f"training {run.config.model.fusion} on {len(run.splits['train'])} clips "
                  f"({run.loader.steps_per_epoch} steps/epoch, {run.loader.num_shapes} batch "
                  f"shapes) over {run.mesh.size} device(s), steps {step}..{tc.num_steps}",
                  flush=True)
        progress = _progress(run, step)
        t0 = time.perf_counter()
        try:
            while step < tc.num_steps and not stopping:
                batch = parallel.shard_batch(next(run.loader), run.mesh)
                run.trace.before(step + 1)
                state, step_metrics = run.train_step(state, batch)
                step += 1
                run.trace.after(step, state)
                run.meter.add(run.train_step.last_flops)
                run.meter.exclude(run.train_step.last_compile_s)
                pending.append(step_metrics)
                stopping = stop.reached(step)
                validate = has_val and itstime(step, tc.eval_every, tc.num_steps)
                save = validate or stopping or itstime(step, tc.checkpoint_every, tc.num_steps)
                if save or itstime(step, tc.log_every, tc.num_steps):
                    text = _write_train_scalars(run, step, pending)
                    pending = []
                    if progress is not None:
                        progress.update(step, text)
                if validate:
                    if progress is not None:
                        progress.close()  # the evaluation shows its own progress
                    values = _validate(run, state, step)
                    run.checkpointer.save(step, state, run.loader.get_state(), metrics=values)
                    progress = _progress(run, step)
                elif save:
                    run.checkpointer.save(step, state, run.loader.get_state())
                if save:
                    run.meter.restart()  # evaluation and saving are not training time
                if step == tc.kill_at_step:
                    os.kill(os.getpid(), signal.SIGKILL)
        finally:
            if progress is not None:
                progress.close()
        train_time = time.perf_counter() - t0
        throughput = run.meter.summary(run.train_step.compile_s)
        run.loader.close()
        run.checkpointer.wait()  # a signal now still waits for the last save
        if stopping or stop.requested():
            raise stop.interrupted(f"interrupted at step {step}; checkpoint saved; run the same "
                                   "command to resume")
    return state, train_time, throughput


def _evaluate_splits(run: Run, params, label: str) -> dict[str, dict]:
    return {split: evaluate(run.eval_step, params, run.cache, run.splits[split], run.config,
                            run.mesh, f"  {label}{split}")
            for split in ("val", "test") if len(run.splits[split])}


def finish(run: Run, state: TrainState, train_time: float, throughput: dict) -> dict:
    """Evaluates the last step and the checkpoint export loads (the best by the validation
    metric, else the last) on val and test; process 0 writes metrics.json, confusion.png (of that
    checkpoint) and curves.png and prints the summary.

    Returns {"val": ..., "test": ...} of the last step and "best": {"step": STEP, "val": ...,
    "test": ...}; metrics.json holds the same plus the run's facts and throughput.
    """
    step = int(state.step)
    last = _evaluate_splits(run, state.params, "")
    best_step = run.checkpointer.best_step()
    exported = step if best_step is None else best_step
    if exported == step:
        best = last
    else:
        best_state, _ = run.checkpointer.restore(exported, run.abstract_state)
        best = _evaluate_splits(run, best_state.params, f"step {exported} ")
    results = {**last, "best": {"step": exported, **best}}
    if jax.process_index() == 0:
        config, workdir, classes = run.config, run.workdir, run.cache.classes
        report.write_json(os.path.join(workdir, METRICS_FILE), {
            "step": step, "best_step": best_step, "train_time_s": train_time,
            "fusion": config.model.fusion, "num_devices": run.mesh.size,
            "throughput": throughput, **results,
        })
        if best:
            split = "test" if "test" in best else "val"
            report.plot_confusion(
                os.path.join(workdir, "confusion.png"), best[split]["confusion"], classes,
                f"{config.model.fusion}, {split}, checkpoint step {exported} (as exported)")
        report.plot_curves(os.path.join(workdir, "curves.png"),
                           read_history(os.path.join(workdir, HISTORY_FILE)))
        print(perf.describe(throughput), flush=True)
        text = report.summary(
            best, classes, f"{config.model.fusion}: {step} steps, {train_time:.0f} s training, "
                           f"workdir {workdir}\nthe checkpoint that export and evaluate load: "
                           f"step {exported}")
        if exported != step:
            text += f"\n\nlast step ({step}):\n" + report.scores_table(last, classes)
        print(text, flush=True)
    return results


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains, checkpoints and evaluates; returns {"val": metrics, "test": metrics} of the last
    step and "best" (see `finish`)."""
    with setup(config, workdir) as run:
        state, train_time, throughput = train_loop(run)
        return finish(run, state, train_time, throughput)
