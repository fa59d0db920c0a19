"""on_device_rows: each device runs the function on its own rows, with the same results (values
and gradients) as the plain call on all rows; 8 fake CPU devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from avfbp_jax.ops.device_rows import DATA_AXIS, data_shards, on_device_rows, use_mesh
from tests.hlo import collectives


def _mesh(n=8):
    return Mesh(np.asarray(jax.devices()[:n]), (DATA_AXIS,))


def _kernel(x, w, b, *, row_offset):
    """tanh(x w + b) scaled per GLOBAL row: right only if row_offset is the block's first row."""
    row = row_offset + jnp.arange(x.shape[0])
    return jnp.tanh(x @ w + b) * (1.0 + 0.1 * row)[:, None]


def _loss(x, w, b):
    z = on_device_rows(_kernel, (x,), (w, b), caller="test")
    return jnp.sum(jnp.sin(3.0 * z) * jnp.arange(1.0, z.shape[1] + 1))


def _inputs(rows=16):
    rng = np.random.default_rng(0)
    return (rng.standard_normal((rows, 3)).astype(np.float32),
            rng.standard_normal((3, 4)).astype(np.float32),
            rng.standard_normal(4).astype(np.float32))


def _sharded(f, mesh):
    return jax.jit(f, in_shardings=(NamedSharding(mesh, P(DATA_AXIS)),
                                    NamedSharding(mesh, P()), NamedSharding(mesh, P())))


def test_without_a_mesh_it_is_the_plain_call():
    x, w, b = _inputs()
    assert data_shards() == 1
    np.testing.assert_array_equal(on_device_rows(_kernel, (x,), (w, b), caller="test"),
                                  _kernel(x, w, b, row_offset=0))


def test_sharded_values_and_gradients_equal_the_plain_call():
    """Forward and the gradients of rows and shared weights: the weight gradients are summed
    over the 8 row blocks exactly once (0 or 2 sums would give 1/8 or 8 times the reference)."""
    x, w, b = _inputs()
    mesh = _mesh()
    plain = jax.value_and_grad(_loss, (0, 1, 2))(x, w, b)  # no mesh: the plain call
    seen = []

    def loss(*a):
        seen.append(data_shards())
        return _loss(*a)

    with use_mesh(mesh):
        forward = _sharded(lambda *a: on_device_rows(_kernel, a[:1], a[1:], caller="t"), mesh)
        np.testing.assert_allclose(forward(x, w, b), _kernel(x, w, b, row_offset=0), rtol=1e-6)
        got = _sharded(jax.value_and_grad(loss, (0, 1, 2)), mesh)(x, w, b)
    assert seen == [8]
    np.testing.assert_allclose(got[0], plain[0], rtol=1e-5)
    for g, want in zip(got[1], plain[1], strict=True):  # float32 rounding: 1e-5 of the largest
        np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_kernel_sees_its_block_and_row_offset():
    """Each device's call gets 16 / 4 = 4 rows and row_offset 0, 4, 8, 12."""
    x = np.zeros((16, 1), np.float32)

    def where(x, *, row_offset):  # x is zero
        return jnp.stack([x[:, 0] + row_offset, x[:, 0] + x.shape[0]], 1)

    mesh = _mesh(4)
    with use_mesh(mesh):
        out = jax.jit(lambda x: on_device_rows(where, (x,), caller="t"),
                      in_shardings=NamedSharding(mesh, P(DATA_AXIS)))(x)
    np.testing.assert_array_equal(out[:, 0], np.repeat([0, 4, 8, 12], 4))
    np.testing.assert_array_equal(out[:, 1], 4)


def test_compiled_gradient_moves_only_the_weight_gradients():
    """The sharded gradient's HLO: an all-reduce of the weight gradients, no all-gather."""
    x, w, b = _inputs(64)
    mesh = _mesh()
    with use_mesh(mesh):
        text = _sharded(jax.grad(_loss, (0, 1, 2)), mesh).lower(x, w, b).compile().as_text()
    assert set(collectives(text)) == {"all-reduce"}


def test_rows_that_do_not_divide_are_an_error():
    x, w, b = _inputs(12)
    with use_mesh(_mesh()), pytest.raises(ValueError, match="my_op: 12 rows do not divide over 8"):
        on_device_rows(_kernel, (x,), (w, b), caller="my_op")
