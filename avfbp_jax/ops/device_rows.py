"""Per-device row blocks: run a function that XLA cannot partition on each device's own rows.

The train step shards every batch array on its first axis over the mesh axis DATA_AXIS and
lets XLA partition the computation. XLA cannot partition a Pallas custom call, and it partitions
an FFT only by gathering the batch first; under jit it would gather the rows onto every device
and run the whole batch on each. `on_device_rows` instead runs the function under
`jax.shard_map` on each device's row block, with the shared operands (weights, biases, keys)
replicated. The shard_map's transpose sums the gradients of the replicated operands over the
data axis, once, as XLA's own partitioning of a plain call would.

The mesh is the one `use_mesh` makes current (the train and eval steps do): `data_shards()`
reads it from the abstract mesh, so the choice is made at trace time, also inside jit.
"""

import contextlib
from collections.abc import Callable, Iterator

import jax
from jax import lax
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def data_shards() -> int:
    """Shards of DATA_AXIS in the current abstract mesh; 1 when there is none, or when the code
    already runs per device (DATA_AXIS manual, inside a shard_map)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or DATA_AXIS not in mesh.axis_names or DATA_AXIS in mesh.manual_axes:
        return 1
    return mesh.shape[DATA_AXIS]


@contextlib.contextmanager
def use_mesh(mesh: jax.sharding.Mesh) -> Iterator[None]:
    """Makes `mesh` the current abstract mesh (what `data_shards` and `on_device_rows` read)
    while tracing the body. jax.sharding.use_abstract_mesh where jax has it, else jax.set_mesh."""
    use_abstract = getattr(jax.sharding, "use_abstract_mesh", None)
    with use_abstract(mesh.abstract_mesh) if use_abstract else jax.set_mesh(mesh):
        yield


def _shard_map(f: Callable, in_specs, out_specs) -> Callable:
    """jax.shard_map over the current abstract mesh, without replication checks (a Pallas call
    has no replication rule); jax.experimental.shard_map on jax versions before jax.shard_map."""
    if hasattr(jax, "shard_map"):
        return jax.shard_map(f, in_specs=in_specs, out_specs=out_specs, check_vma=False)
    from jax.experimental.shard_map import shard_map

    return shard_map(f, jax.sharding.get_abstract_mesh(), in_specs=in_specs,
                     out_specs=out_specs, check_rep=False)


def on_device_rows(kernel: Callable, rows: tuple, shared: tuple = (), *, caller: str):
    """kernel(*rows, *shared, row_offset=...) with each device computing its own row block.

    rows: arrays split on their first axis (the same length for all), as the outputs are.
    shared: pytrees every device sees whole (None allowed). The kernel gets `row_offset`, the
    global index of its block's first row (0 without sharding), so that per-row randomness
    derived from (seed, global row) is the same however the rows are split. Without a mesh
    with more than one data shard it is the plain call with row_offset=0.
    """
    shards = data_shards()
    if shards == 1:
        return kernel(*rows, *shared, row_offset=0)
    total = rows[0].shape[0]
    if total % shards:
        raise ValueError(f"{caller}: {total} rows do not divide over {shards} devices of the "
                         f"{DATA_AXIS!r} mesh axis")

    def per_device(rows, shared):
        offset = lax.axis_index(DATA_AXIS) * rows[0].shape[0]
        return kernel(*rows, *shared, row_offset=offset)

    return _shard_map(per_device, in_specs=(P(DATA_AXIS), P()), out_specs=P(DATA_AXIS))(
        tuple(rows), tuple(shared))
