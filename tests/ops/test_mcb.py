"""MCB: the count sketch and compact bilinear pooling against their explicit formulas (numpy),
the module against its block.bootstrap.pytorch transcription (tools/torch_twins/mfh_mcb.py),
its fixed hashes, and its numerical contract: dropout only in training, bfloat16, jit/vmap,
finite gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avfbp_jax.ops.mcb import MCB, compact_bilinear, count_sketch


@pytest.fixture(scope="module")
def matches_twin():
    pytest.importorskip("torch")
    from tests.ops.fusion_twins import assert_matches_twin
    return assert_matches_twin


def _inputs(b=3, m=5, n=7, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((b, m)).astype(np.float32),
            rng.standard_normal((b, n)).astype(np.float32))


def _hashes(size, d, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, d, size).astype(np.int32), rng.choice([-1.0, 1.0], size)


def test_count_sketch_equals_its_formula():
    d = 6
    h, s = _hashes(9, d, seed=1)
    v = np.random.default_rng(2).standard_normal((2, 3, 9))
    want = np.zeros((2, 3, d))
    for i in range(9):  # Psi(v)_j = sum over i with h_i = j of s_i v_i
        want[..., h[i]] += s[i] * v[..., i]
    got = count_sketch(jnp.asarray(v, jnp.float32), jnp.asarray(h), jnp.asarray(s), d)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("d", [11, 12])
def test_compact_bilinear_is_the_sketch_of_the_outer_product(d):
    (h_x, s_x), (h_y, s_y) = _hashes(5, d, seed=3), _hashes(7, d, seed=4)
    x, y = (v.astype(np.float64) for v in _inputs())
    want = np.zeros((3, d))
    for i in range(5):  # x_i y_j lands in (h_x[i] + h_y[j]) mod d with sign s_x[i] s_y[j]
        for j in range(7):
            want[:, (h_x[i] + h_y[j]) % d] += s_x[i] * s_y[j] * x[:, i] * y[:, j]
    got = compact_bilinear(x.astype(np.float32), y.astype(np.float32), h_x, s_x, h_y, s_y, d)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_hashes_are_fixed_draws_of_the_init_rng():
    x, y = _inputs(m=300, n=200)
    module = MCB(4, mm_dim=1000)
    init = jax.jit(module.init)
    params = init(jax.random.key(0), x, y)["params"]
    for name, size in (("sketch_x", 300), ("sketch_y", 200)):
        h, s = (np.asarray(params[name][k]) for k in ("h", "s"))
        assert h.shape == s.shape == (size,) and h.dtype == s.dtype == np.float32
        assert np.all(h == np.round(h)) and h.min() >= 0 and h.max() < 1000
        assert len(np.unique(h)) > 0.8 * size  # spread over [0, 1000), not one bucket
        assert set(np.unique(s)) == {-1.0, 1.0} and abs(s.mean()) < 0.3
    again = init(jax.random.key(0), x[:1], y[:1])["params"]  # other batch, same key
    other = init(jax.random.key(1), x, y)["params"]
    for name in ("sketch_x", "sketch_y"):
        for k in ("h", "s"):
            np.testing.assert_array_equal(again[name][k], params[name][k])
        assert np.any(other[name]["h"] != params[name]["h"])
    assert np.any(np.asarray(params["sketch_x"]["h"][:200]) != params["sketch_y"]["h"])


SMALL = {
    "odd_size": dict(mm_dim=11),
    "even_size_linear_out": dict(mm_dim=12, activ_output=None),
}


@pytest.mark.parametrize("settings", SMALL.values(), ids=SMALL.keys())
def test_matches_reference(matches_twin, settings):
    matches_twin(MCB(4, **settings), *_inputs())


def test_dropout_placement_matches_reference(matches_twin):
    module = MCB(6, mm_dim=12, activ_output=None, dropout_output=0.5)
    matches_twin(module, *_inputs(b=4), rngs={"dropout": jax.random.key(7)})


def test_matches_reference_at_reference_size(matches_twin):
    matches_twin(MCB(64), *_inputs(b=4, m=512, n=384))


def test_dropout_only_when_not_deterministic():
    x, y = _inputs(b=4)
    plain, dropping = MCB(8, mm_dim=12), MCB(8, mm_dim=12, dropout_output=0.5)
    params = jax.jit(plain.init)(jax.random.key(0), x, y)
    apply = jax.jit(dropping.apply, static_argnames="deterministic")
    want = jax.jit(plain.apply)(params, x, y)
    np.testing.assert_array_equal(apply(params, x, y), want)
    train = lambda seed: apply(params, x, y, deterministic=False,
                               rngs={"dropout": jax.random.key(seed)})
    kept = np.asarray(train(1))
    np.testing.assert_allclose(kept[kept != 0], 2.0 * np.asarray(want)[kept != 0], rtol=1e-6)
    assert np.sum((kept == 0) & (np.asarray(want) != 0)) > 0
    assert np.any(np.asarray(train(2)) != kept)


def test_bfloat16_close_to_float32():
    x, y = _inputs(b=4, m=24, n=20)
    f32, bf16 = MCB(16, mm_dim=64, activ_output=None), MCB(16, mm_dim=64, activ_output=None,
                                                           dtype=jnp.bfloat16)
    params = jax.jit(f32.init)(jax.random.key(0), x, y)
    want, got = jax.jit(f32.apply)(params, x, y), jax.jit(bf16.apply)(params, x, y)
    assert got.dtype == jnp.bfloat16
    assert np.abs(np.asarray(got, np.float32) - want).max() / np.abs(want).max() < 3e-2


def test_jit_vmap_and_leading_shapes_agree():
    module = MCB(4, mm_dim=11)
    x, y = _inputs(b=6)
    params = jax.jit(module.init)(jax.random.key(0), x, y)
    batched = jax.jit(module.apply)(params, x, y)
    per_example = jax.jit(jax.vmap(module.apply, (None, 0, 0)))(params, x, y)
    leading = jax.jit(module.apply)(params, x.reshape(2, 3, -1), y.reshape(2, 3, -1))
    np.testing.assert_allclose(per_example, batched, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(leading.reshape(6, -1), batched, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(module.apply(params, x, y), batched, rtol=1e-6, atol=1e-6)


def test_gradients_finite_at_zero_inputs():
    module = MCB(4, mm_dim=11)
    x, y = np.zeros((3, 5), np.float32), np.zeros((3, 7), np.float32)
    params = jax.jit(module.init)(jax.random.key(0), x, y)["params"]
    loss = lambda p, a, b: jnp.sum(jnp.sin(module.apply({"params": p}, a, b)))
    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(params, x, y)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    assert np.abs(np.asarray(grads[0]["linear_out"]["bias"])).max() > 0
    assert not any(np.any(np.asarray(g)) for g in jax.tree.leaves(
        (grads[0]["sketch_x"], grads[0]["sketch_y"])))


@pytest.mark.parametrize("settings, word", [
    (dict(activ_output="swish"), "activ_output"),
    (dict(mm_dim=0), "mm_dim"),
    (dict(mm_dim=2**24 + 1), "mm_dim"),
])
def test_bad_settings_raise(settings, word):
    x, y = _inputs()
    with pytest.raises(ValueError, match=word):
        MCB(4, **settings).init(jax.random.key(0), x, y)
