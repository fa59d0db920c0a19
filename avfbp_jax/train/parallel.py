"""Data parallelism: a 1-D device mesh with axis "data", batch sharding, multi-host setup.

Parameters and optimizer state are replicated; every batch array is split along its first axis
over the "data" axis. The same jitted step runs on a mesh of one device or of all devices.
"""

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def maybe_initialize_distributed(requested: bool) -> None:
    """Calls jax.distributed.initialize() for multi-host runs (config or env AVFBP_DIST=1).

    Coordinator address, process count and id come from the environment (cluster autodetection
    or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID).
    """
    if requested or os.environ.get("AVFBP_DIST") == "1":
        jax.distributed.initialize()


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
