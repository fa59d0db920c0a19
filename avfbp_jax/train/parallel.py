"""Data parallelism: a 1-D device mesh with axis "data", batch sharding, multi-host setup.

Parameters and optimizer state are replicated; every batch array is split along its first axis
over the "data" axis. The same jitted step runs on a mesh of one device or of all devices.
"""

import os

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from avfbp_jax.ops.device_rows import DATA_AXIS
from avfbp_jax.train.config import RunSetupError

# What `avfbp launch` sets for each process, read here when the config does not say.
COORDINATOR_ENV, NUM_PROCESSES_ENV, PROCESS_ID_ENV = (
    "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def _env_int(name: str) -> int | None:
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise RunSetupError(f"environment variable {name}={text!r} is not an integer") from None


def distributed_settings(train: ml_collections.ConfigDict) -> dict:
    """coordinator_address, num_processes and process_id for jax.distributed.initialize.

    Each comes from train.coordinator_address / num_processes / process_id when set, else from
    JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, else None (left to jax's
    cluster autodetection: SLURM, Open MPI, TPU pods, Kubernetes).
    """
    settings = {
        "coordinator_address": train.coordinator_address or os.environ.get(COORDINATOR_ENV) or None,
        "num_processes": train.num_processes or _env_int(NUM_PROCESSES_ENV),
        "process_id": train.process_id if train.process_id >= 0 else _env_int(PROCESS_ID_ENV),
    }
    n, i = settings["num_processes"], settings["process_id"]
    if n is not None and n < 1:
        raise RunSetupError(f"num_processes={n}: expected at least 1")
    if n is not None and i is not None and not 0 <= i < n:
        raise RunSetupError(f"process_id={i} is outside 0..{n - 1} (num_processes={n})")
    return settings


def initialize_distributed(train: ml_collections.ConfigDict) -> None:
    """Starts jax.distributed when train.distributed is set (or AVFBP_DIST=1); else nothing.

    Settings per `distributed_settings`; whatever is missing comes from cluster autodetection.
    CPU processes exchange collectives through gloo. Raises RunSetupError, one line, when the
    settings are incomplete and no cluster supplies the rest.
    """
    if not (train.distributed or os.environ.get("AVFBP_DIST") == "1"):
        return
    settings = distributed_settings(train)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(**settings, heartbeat_timeout_seconds=train.heartbeat_timeout_s)
    except ValueError as e:  # jax: "Number of processes must be defined." and the like
        missing = ", ".join(k for k, v in settings.items() if v is None)
        raise RunSetupError(
            f"multi-process start: {e} No cluster (SLURM, Open MPI, TPU, Kubernetes) was "
            f"detected to supply {missing}: set train.{missing.replace(', ', ' / train.')} or "
            f"{COORDINATOR_ENV} / {NUM_PROCESSES_ENV} / {PROCESS_ID_ENV}, or start the "
            "processes with `avfbp launch`") from None


def make_mesh(num_devices: int = 0) -> Mesh:
    """A mesh over the first `num_devices` devices (0 = all, across every host)."""
    devices = jax.devices()
    if num_devices:
        if num_devices > len(devices):
            raise ValueError(f"num_devices={num_devices} but only {len(devices)} are visible")
        devices = devices[:num_devices]
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def local_batch_size(global_batch: int, mesh: Mesh) -> int:
    """This process's share of the global batch; checks the batch divides over the mesh."""
    if global_batch % mesh.size:
        raise ValueError(
            f"batch size {global_batch} does not divide over {mesh.size} devices; "
            f"use a multiple of {mesh.size}"
        )
    return global_batch // jax.process_count()


def shard_batch(local_batch: dict, mesh: Mesh) -> dict:
    """Global jax arrays sharded on "data" from this process's slice of the batch."""
    sharding = data_sharded(mesh)

    def put(x):
        x = np.asarray(x)
        global_shape = (x.shape[0] * jax.process_count(), *x.shape[1:])
        return jax.make_array_from_process_local_data(sharding, x, global_shape)

    return {k: put(v) for k, v in local_batch.items()}


def replicate(tree, mesh: Mesh):
    """Puts a host pytree on every device of the mesh."""
    return jax.device_put(tree, replicated(mesh))
