"""FBP kernel: against the explicit bilinear form it factorizes, and its numerical contract."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avfbp_jax.ops import FBP, fbp, signed_sqrt


def _inputs(seed=0, b=5, m=7, n=6, k=3, o=4):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((b, m)).astype(np.float32),
            rng.standard_normal((b, n)).astype(np.float32),
            rng.standard_normal((m, k * o)).astype(np.float32),
            rng.standard_normal((n, k * o)).astype(np.float32),
            rng.standard_normal(k * o).astype(np.float32),
            rng.standard_normal(k * o).astype(np.float32))


def _normalize(z):
    z = np.sign(z) * np.sqrt(np.abs(z))
    return z / np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-12)


def test_equals_explicit_bilinear_form():
    k, o = 3, 4
    x, y, u, v, _, _ = _inputs(k=k, o=o)
    x, y, u, v = (a.astype(np.float64) for a in (x, y, u, v))
    # z_j = x^T W_j y with W_j = sum_{r<k} U[:, j*k + r] V[:, j*k + r]^T (adjacent groups).
    w = np.stack([sum(np.outer(u[:, j * k + r], v[:, j * k + r]) for r in range(k))
                  for j in range(o)])
    z = np.einsum("bm,jmn,bn->bj", x, w, y)
    got = fbp(x.astype(np.float32), y.astype(np.float32), u.astype(np.float32),
              v.astype(np.float32), None, None, k=k)
    np.testing.assert_allclose(got, _normalize(z), rtol=1e-4, atol=1e-5)
    # A strided grouping (j + r * o) would give a different answer: the test can tell them apart.
    w_strided = np.stack([sum(np.outer(u[:, j + r * o], v[:, j + r * o]) for r in range(k))
                          for j in range(o)])
    z_strided = np.einsum("bm,jmn,bn->bj", x, w_strided, y)
    assert np.abs(_normalize(z_strided) - got).max() > 1e-2


def test_output_is_unit_norm_signed_sqrt():
    x, y, u, v, bx, by = _inputs(1)
    z = np.asarray(fbp(x, y, u, v, bx, by, k=3))
    np.testing.assert_allclose(np.linalg.norm(z, axis=-1), 1.0, rtol=1e-5)
    p = (x @ u + bx) * (y @ v + by)
    np.testing.assert_allclose(z, _normalize(p.reshape(len(p), -1, 3).sum(-1)), rtol=1e-4,
                               atol=1e-5)


def test_biased_form_equals_inputs_augmented_by_one():
    x, y, u, v, bx, by = _inputs(2)
    ones = np.ones((len(x), 1), np.float32)
    biased = fbp(x, y, u, v, bx, by, k=3)
    augmented = fbp(np.concatenate([x, ones], 1), np.concatenate([y, ones], 1),
                    np.concatenate([u, bx[None]], 0), np.concatenate([v, by[None]], 0),
                    None, None, k=3)
    np.testing.assert_allclose(biased, augmented, rtol=1e-5, atol=1e-6)


def test_vmap_and_jit_match_batched():
    x, y, u, v, bx, by = _inputs(3)
    batched = fbp(x, y, u, v, bx, by, k=3)
    per_example = jax.vmap(lambda a, b: fbp(a, b, u, v, bx, by, k=3))(x, y)
    jitted = jax.jit(lambda *a: fbp(*a, k=3))(x, y, u, v, bx, by)
    np.testing.assert_allclose(per_example, batched, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jitted, batched, rtol=1e-5, atol=1e-6)


def _all_finite(tree):
    return all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(tree))


def test_gradients_finite_for_a_whole_zero_row():
    x, y, u, v, _, _ = _inputs(4)
    x[1] = 0.0  # no bias: the whole pooled row of example 1 is exactly 0

    def loss(x, y, u, v):
        return jnp.sum(fbp(x, y, u, v, None, None, k=3) * jnp.arange(4.0))

    assert np.all(np.asarray(fbp(x, y, u, v, None, None, k=3))[1] == 0.0)
    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(x, y, u, v)
    assert _all_finite(grads)
    assert np.abs(np.asarray(grads[0])[0]).max() > 0  # the other examples still learn


def test_gradients_finite_where_single_pooled_values_are_zero():
    x, y, u, v, bx, by = _inputs(5)
    u[:, 3:6] = 0.0
    bx[3:6] = 0.0  # group j=1 of every example pools to exactly 0

    def loss(*args):
        return jnp.sum(jnp.sin(fbp(*args, k=3)))

    z = np.asarray(fbp(x, y, u, v, bx, by, k=3))
    assert np.all(z[:, 1] == 0.0) and np.all(z[:, 0] != 0.0)
    assert _all_finite(jax.jit(jax.grad(loss, argnums=tuple(range(6))))(x, y, u, v, bx, by))


def test_signed_sqrt_gradient():
    z = jnp.array([-4.0, -0.25, 0.0, 0.25, 4.0])
    grad = np.asarray(jax.vmap(jax.grad(signed_sqrt))(z))
    np.testing.assert_allclose(grad[[0, 1, 3, 4]], [0.25, 1.0, 1.0, 0.25], rtol=1e-6)
    assert np.isfinite(grad[2]) and grad[2] > 0


def test_bf16_inputs_accumulate_in_float32():
    x, y, u, v, bx, by = _inputs(6, b=4, m=64, n=48, k=5, o=16)
    xb, yb = jnp.asarray(x, jnp.bfloat16), jnp.asarray(y, jnp.bfloat16)
    got = fbp(xb, yb, u, v, bx, by, k=5)
    assert got.dtype == jnp.bfloat16
    # Reference: the same bf16-rounded operands, computed entirely in float32.
    ref = fbp(*(np.asarray(jnp.asarray(a, jnp.bfloat16), np.float32) for a in (x, y, u, v)),
              bx, by, k=5)
    np.testing.assert_allclose(np.asarray(got, np.float32), ref, atol=1e-2)
    jaxpr = str(jax.make_jaxpr(lambda a, b: fbp(a, b, u, v, bx, by, k=5))(xb, yb))
    assert jaxpr.count("preferred_element_type=float32") == 2


def test_dropout_acts_on_the_product_and_only_with_an_rng():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((64, 8)).astype(np.float32)
    y = rng.standard_normal((64, 8)).astype(np.float32)
    u = rng.standard_normal((8, 200)).astype(np.float32)
    v = rng.standard_normal((8, 200)).astype(np.float32)
    plain = fbp(x, y, u, v, None, None, k=1)
    np.testing.assert_array_equal(fbp(x, y, u, v, None, None, k=1, dropout_rate=0.5), plain)
    dropped = np.asarray(fbp(x, y, u, v, None, None, k=1, dropout_rate=0.3,
                             dropout_rng=jax.random.PRNGKey(0)))
    # k=1: a dropped product is a pooled value of exactly 0.
    assert abs((dropped == 0).mean() - 0.3) < 0.02
    # Survivors keep their value up to one per-row factor (the 1/(1-rate) scale and the new
    # norm): the dropout mask acts on p, before the pooling and the normalisation.
    ratio = np.where(dropped != 0, dropped / np.asarray(plain), np.nan)
    row_ratio = np.nanmean(ratio, axis=1, keepdims=True)
    np.testing.assert_allclose(np.nan_to_num(ratio / row_ratio, nan=1.0), 1.0, rtol=1e-4)
    assert np.all(row_ratio > 1.0)  # the row lost mass, so survivors grew after normalising


def test_rejects_mismatched_shapes():
    x, y, u, v, _, _ = _inputs()
    with pytest.raises(ValueError, match="k\\*o"):
        fbp(x, y, u, v[:, :-1], None, None, k=3)
    with pytest.raises(ValueError, match="k\\*o"):
        fbp(x, y, u, v, None, None, k=5)


def test_module_wraps_the_kernel():
    x, y, *_ = _inputs(8)
    module = FBP(k=3, o=4, dropout_rate=0.5)
    variables = module.init(jax.random.PRNGKey(0), x, y)
    params = variables["params"]
    assert {n: p.shape for n, p in params.items()} == {
        "w_x": (7, 12), "w_y": (6, 12), "b_x": (12,), "b_y": (12,)}
    assert np.abs(params["b_x"]).max() <= 1 / np.sqrt(7) and np.abs(params["b_x"]).min() > 0
    out = module.apply(variables, x, y)
    np.testing.assert_allclose(
        out, fbp(x, y, params["w_x"], params["w_y"], params["b_x"], params["b_y"], k=3),
        rtol=1e-6)
    train = module.apply(variables, x, y, deterministic=False,
                         rngs={"dropout": jax.random.PRNGKey(1)})
    assert np.abs(np.asarray(train) - np.asarray(out)).max() > 1e-3
    bf16 = FBP(k=3, o=4, dtype=jnp.bfloat16).apply(variables, x, y)
    assert bf16.dtype == jnp.bfloat16
    assert jax.tree.map(lambda p: p.dtype, params) == {n: jnp.float32 for n in params}
    assert isinstance(module, nn.Module)


def _plain_fbp(x, y, u, v, bx, by, k, keep=None, rate=0.0):
    """The kernel's formula in plain jnp, differentiated by JAX (the custom VJP's reference)."""
    px = x @ u if bx is None else x @ u + bx
    py = y @ v if by is None else y @ v + by
    p = px * py
    if keep is not None:
        p = jnp.where(keep, p / (1.0 - rate), 0.0)
    z = p.reshape(*p.shape[:-1], -1, k).sum(-1)
    z = signed_sqrt(z)
    return z * jax.lax.rsqrt(jnp.maximum(jnp.sum(z * z, -1, keepdims=True), 1e-24))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_custom_vjp_equals_autodiff_of_the_formula(bias, dropout):
    x, y, u, v, bx, by = _inputs(9, b=11, m=9, n=13, k=5, o=7)
    bx, by = (bx, by) if bias else (None, None)
    g = np.random.default_rng(10).standard_normal((11, 7)).astype(np.float32)
    rng = jax.random.PRNGKey(3) if dropout else None
    keep = jax.random.bernoulli(rng, 1 - dropout, (11, 35)) if dropout else None
    argnums = (0, 1, 2, 3, 4, 5) if bias else (0, 1, 2, 3)

    def loss(fn):
        return lambda *a: jnp.vdot(fn(*a), g)

    kernel = lambda x, y, u, v, bx=None, by=None: fbp(x, y, u, v, bx, by, k=5,
                                                      dropout_rate=dropout, dropout_rng=rng)
    plain = lambda x, y, u, v, bx=None, by=None: _plain_fbp(x, y, u, v, bx, by, 5, keep, dropout)
    args = (x, y, u, v, bx, by) if bias else (x, y, u, v)
    np.testing.assert_allclose(kernel(*args), plain(*args), rtol=1e-5, atol=1e-6)
    got = jax.jit(jax.grad(loss(kernel), argnums))(*args)
    want = jax.grad(loss(plain), argnums)(*args)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())


def test_custom_vjp_under_vmap_and_leading_batch_shape():
    x, y, u, v, bx, by = _inputs(11, b=6)
    loss = lambda x, y, u, v: jnp.sum(jnp.cos(fbp(x, y, u, v, bx, by, k=3)))
    per_row = lambda x, y, u, v: jnp.sum(jax.vmap(
        lambda a, b: jnp.cos(fbp(a, b, u, v, bx, by, k=3)))(x, y))
    shaped = lambda x, y, u, v: loss(x.reshape(2, 3, -1), y.reshape(2, 3, -1), u, v)
    want = jax.grad(lambda *a: jnp.sum(jnp.cos(_plain_fbp(*a[:2], a[2], a[3], bx, by, 3))),
                    (0, 1, 2, 3))(x, y, u, v)
    for fn in (loss, per_row, shaped):
        for a, b in zip(jax.grad(fn, (0, 1, 2, 3))(x, y, u, v), want, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_backward_makes_no_transposes():
    # The hand-written VJP names the contracted axes in its dot_generals instead of transposing
    # (B, k*o) operands; JAX's own transpose rule for dot_general would add transposes here.
    x, y, u, v, bx, by = _inputs(12)
    grad = jax.grad(lambda *a: jnp.sum(fbp(*a, k=3)), argnums=tuple(range(6)))
    jaxpr = str(jax.make_jaxpr(grad)(x, y, u, v, bx, by))
    assert jaxpr.count("dot_general") == 6 and "transpose" not in jaxpr


def test_bf16_gradients_close_to_float32():
    x, y, u, v, bx, by = _inputs(13, b=8, m=64, n=48, k=5, o=16)
    g = np.random.default_rng(14).standard_normal((8, 16)).astype(np.float32)
    loss = lambda x, y, u, v, bx, by: jnp.vdot(fbp(x, y, u, v, bx, by, k=5).astype(jnp.float32), g)
    argnums = tuple(range(6))
    got = jax.grad(loss, argnums)(jnp.asarray(x, jnp.bfloat16), jnp.asarray(y, jnp.bfloat16),
                                  u, v, bx, by)
    assert [a.dtype for a in got] == [jnp.bfloat16] * 2 + [jnp.float32] * 4
    # Reference: the same bf16-rounded operands, computed entirely in float32. What is left is the
    # backward's own rounding: the projection gradients enter its GEMMs as bf16 (8-bit mantissa).
    rounded = [np.asarray(jnp.asarray(a, jnp.bfloat16), np.float32) for a in (x, y, u, v)]
    want = jax.grad(loss, argnums)(*rounded, bx, by)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(a, np.float32), b, atol=0.02 * np.abs(b).max())
