"""Orbax checkpoints of a run: train state + loader position, keep-latest-N and keep-best.

Layout: WORKDIR/config.json (the full config) and WORKDIR/checkpoints/<step>/{state,loader}:
"state" a StandardCheckpointHandler pytree (the TrainState), "loader" a JSON item (the data
position). Orbax writes each step under a temporary name and renames it when complete, so a
process killed mid-save leaves at most a temporary folder, which the next start deletes and
never restores.
"""

import json
import logging
import os

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from avfbp_jax import atomic
from avfbp_jax.train.config import BEST_METRICS, RunSetupError
from avfbp_jax.train.presets import base_config

CONFIG_FILE = "config.json"
CLASSES_FILE = "classes.json"  # the class names in label order, so export needs no cache


class _SkipExpectedWarnings(logging.Filter):
    """Orbax warns about every periodic save (they carry no validation metrics by design) and
    about a save at a preemption sync point (the run says so itself when it stops)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return ("did not provide metrics" not in message
                and "Reached preemption sync point" not in message)


logging.getLogger("absl").addFilter(_SkipExpectedWarnings())
CHECKPOINTS = "checkpoints"
STATE, LOADER = "state", "loader"  # the items of a step


def _handler_registry() -> ocp.handlers.CheckpointHandlerRegistry:
    """Which Orbax handler saves and restores each item of a step."""
    return ocp.handlers.create_default_handler_registry(
        **{STATE: ocp.StandardCheckpointHandler(), LOADER: ocp.JsonCheckpointHandler()})


class Checkpointer:
    """A CheckpointManager for one workdir.

    Keeps the `keep` most recent checkpoints plus the one with the highest `best_metric` among
    those saved with validation metrics. Saves are asynchronous unless async_save is False.
    """

    def __init__(
        self, workdir: str, *, keep: int = 2, best_metric: str = "val/ua", async_save: bool = True
    ):
        if best_metric not in BEST_METRICS:
            raise ValueError(f"keep_best={best_metric!r}; expected one of {BEST_METRICS}")
        self.best_metric = best_metric
        preservation = policies.AnyPreservationPolicy([
            policies.LatestN(n=keep),
            policies.BestN(
                get_metric_fn=lambda m: m[best_metric], n=1, keep_checkpoints_without_metrics=False
            ),
        ])
        options = ocp.CheckpointManagerOptions(
            preservation_policy=preservation,
            best_fn=lambda m: m[best_metric],  # also makes Orbax write the metrics to disk
            best_mode="max",
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
            create=True,
        )
        self.directory = os.path.join(os.path.abspath(workdir), CHECKPOINTS)
        self.manager = ocp.CheckpointManager(
            self.directory, options=options, handler_registry=_handler_registry()
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        return self.manager.best_step()

    def save(self, step: int, state, loader_state: dict, metrics: dict | None = None) -> None:
        """Starts saving (returns once the arrays are copied to host; writes in the background)."""
        args = ocp.args.Composite(
            **{STATE: ocp.args.StandardSave(state), LOADER: ocp.args.JsonSave(loader_state)})
        metrics = None if metrics is None else {k: float(v) for k, v in metrics.items()}
        self.manager.save(step, args=args, metrics=metrics, force=True)

    def restore(self, step: int, abstract_state) -> tuple:
        """(state, loader_state) of `step`, laid onto the shardings in abstract_state."""
        args = ocp.args.Composite(
            **{STATE: ocp.args.StandardRestore(abstract_state), LOADER: ocp.args.JsonRestore()})
        restored = self.manager.restore(step, args=args)
        return restored[STATE], restored[LOADER]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def save_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Writes WORKDIR/config.json atomically."""
    os.makedirs(workdir, exist_ok=True)
    atomic.write_text(os.path.join(workdir, CONFIG_FILE),
                      config.to_json_best_effort(indent=2, sort_keys=True))


def save_classes(workdir: str, classes: list[str]) -> None:
    """Writes WORKDIR/classes.json (the class names in label order) atomically."""
    atomic.write_json(os.path.join(workdir, CLASSES_FILE), list(classes))


def load_classes(path: str) -> list[str] | None:
    """The class names of the run at `path` (a workdir or a checkpoint step directory in one);
    None for a run made before they were saved."""
    file = os.path.join(_resolve(path)[0], CLASSES_FILE)
    if not os.path.exists(file):
        return None
    with open(file) as f:
        return json.load(f)


# Fields a resumed run may change: they steer the loop, the devices or the host-side loader,
# not what is trained (a longer num_steps continues the run, as in "train 2000 more steps").
# model.fbp_impl picks the kernel of the same function with the same parameters (a run trained
# on a GPU with "pallas" may continue on a CPU with "xla"); only the dropout masks differ.
RESUMABLE_FIELDS = frozenset({
    "train.num_steps", "train.log_every", "train.eval_every", "train.checkpoint_every",
    "train.keep", "train.async_checkpointing", "train.eval_batch_size", "train.num_devices",
    "train.distributed", "train.coordinator_address", "train.num_processes", "train.process_id",
    "train.heartbeat_timeout_s", "train.kill_at_step", "train.peak_tflops", "train.profile_steps",
    "train.compilation_cache_dir",
    "data.prefetch", "data.loader_threads", "data.in_memory", "data.workers",
    "model.fbp_impl",
})


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_same_run(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Raises RunSetupError if WORKDIR/config.json differs from `config` outside RESUMABLE_FIELDS.

    Resuming (or reusing a finished run) under other settings would silently mix two runs.
    """
    saved = _flatten(load_config(workdir).to_dict())
    current = _flatten(json.loads(config.to_json_best_effort()))
    absent = "<absent>"
    changed = [
        f"{key}: {saved.get(key, absent)!r} -> {current.get(key, absent)!r}"
        for key in sorted(saved.keys() | current.keys())
        if key not in RESUMABLE_FIELDS and saved.get(key, absent) != current.get(key, absent)
    ]
    if changed:
        raise RunSetupError(
            f"{workdir} holds a run with other settings ({'; '.join(changed)}); resume it with "
            f"its own settings ({os.path.join(workdir, CONFIG_FILE)}) or train into a new --workdir"
        )


def _with_new_fields(saved: dict, defaults: dict) -> dict:
    """`saved` plus every field of `defaults` it lacks, recursively."""
    out = dict(saved)
    for key, value in defaults.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = _with_new_fields(out[key], value)
    return out


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """WORKDIR/config.json, with the fields that later versions of the code added (absent from
    an older run's file) at their defaults: a field is only ever added with a default that keeps
    the earlier behaviour (e.g. model.fbp_impl "xla")."""
    path = os.path.join(workdir, CONFIG_FILE)
    try:
        with open(path) as f:
            saved = json.load(f)
            return ml_collections.ConfigDict(_with_new_fields(saved, base_config().to_dict()))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path}: no config.json (is {workdir} a training workdir?)") from None


def _resolve(path: str) -> tuple[str, int | None]:
    """(workdir, step or None) for a workdir or a checkpoint step directory."""
    path = os.path.abspath(path)
    if os.path.isfile(os.path.join(path, CONFIG_FILE)):
        return path, None
    parent = os.path.dirname(path)
    name = os.path.basename(path)
    if os.path.basename(parent) == CHECKPOINTS and name.isdigit():
        return os.path.dirname(parent), int(name)
    raise FileNotFoundError(
        f"{path}: neither a workdir (with {CONFIG_FILE}) nor a checkpoint step directory "
        f"(WORKDIR/{CHECKPOINTS}/STEP)"
    )


def _read_only_manager(workdir: str, config: ml_collections.ConfigDict):
    key = config.get("train", {}).get("keep_best", "val/ua")
    options = ocp.CheckpointManagerOptions(
        read_only=True, best_fn=lambda m: m.get(key, -np.inf), best_mode="max"
    )
    directory = os.path.join(workdir, CHECKPOINTS)
    return ocp.CheckpointManager(directory, options=options, handler_registry=_handler_registry())


def _pick_step(manager: ocp.CheckpointManager, path_step: int | None, step: int | None) -> int:
    steps = manager.all_steps()
    step = step if step is not None else path_step
    if step is None:
        step = manager.best_step()
    if step is None:  # no checkpoint has validation metrics
        step = manager.latest_step()
    if step is None or step not in steps:
        what = f"checkpoint step {step}" if step is not None else "checkpoint"
        raise FileNotFoundError(f"{manager.directory}: no {what} (saved steps: {sorted(steps)})")
    return step


def resolve_step(path: str, step: int | None = None) -> int:
    """The checkpoint step that load_for_inference(path, step) loads."""
    workdir, path_step = _resolve(path)
    with _read_only_manager(workdir, load_config(workdir)) as manager:
        return _pick_step(manager, path_step, step)


def load_for_inference(
    path: str, step: int | None = None
) -> tuple[dict, ml_collections.ConfigDict]:
    """(params as numpy arrays, config) from a workdir or one checkpoint step directory.

    For a workdir: `step` if given, else the best checkpoint by the validation metric, else the
    latest. The params come back as host numpy arrays, whatever device count wrote them.
    """
    workdir, path_step = _resolve(path)
    config = load_config(workdir)
    with _read_only_manager(workdir, config) as manager:
        step = _pick_step(manager, path_step, step)
        # Numpy leaves as the target: restored as host arrays, whatever the saved shardings.
        target = jax.tree.map(lambda m: np.empty(m.shape, m.dtype),
                              manager.metadata(step).item_metadata[STATE].tree)
        restored = manager.restore(
            step, args=ocp.args.Composite(**{STATE: ocp.args.StandardRestore(target)}))
    return restored[STATE]["params"], config
