"""TFN and LMF fusion layers: against the PyTorch transcriptions of the authors' code (forward and
gradients, float64 truth, float32 via twin_check), dropout, dtype, transforms, and LMF as TFN's
fused layer with a rank-R weight tensor."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avfbp_jax.ops.tensor_fusion import LMF, TFN, tensor_fusion
from tests.ops.twin_check import assert_matches_reference

torch = pytest.importorskip("torch")
from tools.torch_twins import tensor_fusion as twins  # noqa: E402  (needs torch)

# (batch, m, n, output_dim, TFN post_fusion_dim): odd small sizes, then the reference's
# post_fusion_dim 32 at our model's stream sizes (audio 256, video 128). LMF: default rank 4.
SMALL = (3, 5, 7, 4, 6)
REFERENCE = (32, 256, 128, 4, 32)


def _inputs(seed, b, m, n, out):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((b, m)).astype(np.float32),
            rng.standard_normal((b, n)).astype(np.float32),
            rng.standard_normal((b, out)).astype(np.float32))


def _params(module, x, y, seed=0):
    """Random parameters in the module's layout, without compiling its initialisers (random
    number generation takes about a second to compile on a CPU; init is tested on its own)."""
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), x, y)["params"]
    rng = np.random.default_rng(seed)

    def fill(leaf):
        fan = max(1, leaf.size // leaf.shape[-1])  # all axes but the output one
        return jnp.asarray(rng.uniform(-1, 1, leaf.shape) / np.sqrt(fan), leaf.dtype)

    return jax.tree.map(fill, shapes)


def _applier(module, **kwargs):
    """(params, x, y) -> module output."""
    return lambda p, a, b: module.apply({"params": p}, a, b, **kwargs)


def _forward_backward(forward, params, x, y, cot):
    """forward(params, x, y) and the gradients of sum(output * cot) wrt x, y and params."""
    def run(params, x, y, cot):
        out, vjp = jax.vjp(forward, params, x, y)
        gp, gx, gy = vjp(cot.astype(out.dtype))
        return out, gx, gy, gp

    return jax.jit(run)(params, x, y, jnp.asarray(cot))


def _assert_matches_twin(ours, twin, x, y, cot, params, keep=None):
    ref64 = twins.forward_backward(twin, params, x, y, cot, torch.float64, keep)
    ref32 = twins.forward_backward(twin, params, x, y, cot, torch.float32, keep)
    for name, a, r64, r32 in zip(("output", "d x", "d y"), ours[:3], ref64[:3], ref32[:3],
                                 strict=True):
        assert_matches_reference(a, r64, r32, name)
    flat = jax.tree_util.tree_leaves_with_path(ours[3])
    assert len(flat) == len(jax.tree.leaves(ref64[3]))
    for path, g in flat:
        keys = [k.key for k in path]
        r64, r32 = ref64[3], ref32[3]
        for k in keys:
            r64, r32 = r64[k], r32[k]
        assert_matches_reference(g, r64, r32, "d " + "/".join(keys))


@pytest.mark.parametrize("sizes", [SMALL, REFERENCE], ids=["small", "reference"])
def test_tfn_matches_reference(sizes):
    b, m, n, out, k = sizes
    x, y, cot = _inputs(0, b, m, n, out)
    module = TFN(out, post_fusion_dim=k)
    params = _params(module, x, y)
    assert params["post_fusion_layer_1"]["kernel"].shape == (m + 1, n + 1, k)
    twin = twins.TFNFusion(m, n, k, out, module.post_fusion_dropout)
    # The twin forms the outer product and flattens it, as the reference does: this is also
    # the check that our einsum equals the materialised form.
    _assert_matches_twin(_forward_backward(_applier(module), params, x, y, cot), twin, x, y,
                         cot, params)


@pytest.mark.parametrize("sizes", [SMALL, REFERENCE], ids=["small", "reference"])
def test_lmf_matches_reference(sizes):
    b, m, n, out, _ = sizes
    x, y, cot = _inputs(1, b, m, n, out)
    module = LMF(out)
    params = _params(module, x, y, 1)
    twin = twins.LMFFusion(m, n, out, module.rank)
    _assert_matches_twin(_forward_backward(_applier(module), params, x, y, cot), twin, x, y,
                         cot, params)


def test_tfn_dropout_mask_on_the_fused_tensor_matches_reference():
    b, m, n, out, k = SMALL
    rate, key = 0.3, jax.random.PRNGKey(5)
    x, y, cot = _inputs(2, b, m, n, out)
    module = TFN(out, post_fusion_dim=k, post_fusion_dropout=rate)
    params = _params(module, x, y, 2)
    # The documented mask of tensor_fusion, given to the twin in place of torch's draw.
    keep = np.asarray(jax.random.bernoulli(key, 1 - rate, (b, m + 1, n + 1)))
    assert 0 < keep.mean() < 1

    def forward(p, a, c):  # TFN with the fused layer's dropout drawn from `key`
        p1, p2, p3 = (p[f"post_fusion_layer_{i}"] for i in (1, 2, 3))
        h = jax.nn.relu(tensor_fusion(a, c, p1["kernel"], p1["bias"], dropout_rate=rate,
                                      dropout_rng=key))
        h = jax.nn.relu(h @ p2["kernel"] + p2["bias"])
        return h @ p3["kernel"] + p3["bias"]

    twin = twins.TFNFusion(m, n, k, out, rate)
    _assert_matches_twin(_forward_backward(forward, params, x, y, cot), twin, x, y, cot, params,
                         keep)


def test_tfn_dropout_only_when_not_deterministic():
    x, y, _ = _inputs(3, 16, 5, 7, 4)
    module = TFN(4, post_fusion_dim=6, post_fusion_dropout=0.5)
    params = {"params": _params(module, x, y)}
    apply = jax.jit(module.apply, static_argnames="deterministic")
    rngs = lambda seed: {"dropout": jax.random.PRNGKey(seed)}
    plain = apply(params, x, y)
    np.testing.assert_array_equal(apply(params, x, y, rngs=rngs(0)), plain)
    dropped = apply(params, x, y, deterministic=False, rngs=rngs(0))
    assert np.abs(dropped - plain).max() > 1e-3
    np.testing.assert_array_equal(apply(params, x, y, deterministic=False, rngs=rngs(0)), dropped)
    assert np.abs(apply(params, x, y, deterministic=False, rngs=rngs(1)) - dropped).max() > 1e-3
    no_rate = TFN(4, post_fusion_dim=6, post_fusion_dropout=0.0)
    np.testing.assert_array_equal(no_rate.apply(params, x, y, deterministic=False), plain)
    # LMF has no dropout (the reference never applies its post_fusion_dropout).
    lmf = LMF(4)
    lmf_params = {"params": _params(lmf, x, y)}
    np.testing.assert_array_equal(lmf.apply(lmf_params, x, y, deterministic=False, rngs=rngs(0)),
                                  lmf.apply(lmf_params, x, y))


def test_lmf_is_the_fused_layer_with_a_rank_r_kernel():
    x, y, _ = _inputs(4, 6, 5, 7, 3)
    module = LMF(3, rank=2)
    p = _params(module, x, y, 4)
    # W_ijk = sum_r w_r A_rik B_rjk, built in float64 numpy.
    a, b_, w = (np.asarray(p[k], np.float64) for k in ("x_factor", "y_factor", "fusion_weights"))
    kernel = np.einsum("r,rik,rjk->ijk", w[0], a, b_)
    want = tensor_fusion(x, y, kernel.astype(np.float32), p["fusion_bias"][0])
    np.testing.assert_allclose(module.apply({"params": p}, x, y), want, rtol=1e-5, atol=1e-5)
    # A different rank-2 kernel (factors swapped between the terms) would not match.
    other = np.einsum("r,rik,rjk->ijk", w[0], a, b_[::-1])
    assert np.abs(tensor_fusion(x, y, other.astype(np.float32), p["fusion_bias"][0])
                  - want).max() > 1e-2


def test_initialisation_follows_the_reference():
    x, y = jnp.zeros((2, 63)), jnp.zeros((2, 31))
    lmf, tfn = jax.jit(lambda key: (LMF(16, rank=4).init(key, x, y)["params"],
                                    TFN(4).init(key, x, y)["params"]))(jax.random.PRNGKey(0))
    # xavier_normal with torch's fans: (rank, d+1, o) has fan_in (d+1) o, fan_out rank o.
    assert abs(np.std(lmf["x_factor"]) / np.sqrt(2.0 / (64 * 16 + 4 * 16)) - 1) < 0.05
    assert abs(np.std(lmf["y_factor"]) / np.sqrt(2.0 / (32 * 16 + 4 * 16)) - 1) < 0.05
    assert np.all(lmf["fusion_bias"] == 0)
    # torch.nn.Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias.
    for name, fan_in in [("post_fusion_layer_1", 64 * 32), ("post_fusion_layer_2", 32)]:
        bound = 1 / np.sqrt(fan_in)
        for leaf in tfn[name].values():
            assert leaf.dtype == jnp.float32
            assert np.abs(leaf).max() <= bound and np.abs(leaf).max() > 0.8 * bound


@pytest.mark.parametrize("cls", [TFN, LMF])
def test_bf16_close_to_f32_with_float32_params(cls):
    x, y, cot = _inputs(6, 8, 24, 16, 5)
    f32, bf16 = cls(5), cls(5, dtype=jnp.bfloat16)
    params = _params(f32, x, y)
    assert all(leaf.dtype == jnp.float32 for leaf in
               jax.tree.leaves(jax.eval_shape(bf16.init, jax.random.PRNGKey(0), x, y)))
    got, *grads = _forward_backward(_applier(bf16), params, x, y, cot)
    assert got.dtype == jnp.bfloat16
    want = _forward_backward(_applier(f32), params, x, y, cot)[0]
    assert np.abs(np.asarray(got, np.float32) - want).max() <= 1e-2 * np.abs(want).max()
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    jaxpr = str(jax.make_jaxpr(_applier(bf16))(params, x, y))
    assert "bf16" in jaxpr and "preferred_element_type=float32" in jaxpr


@pytest.mark.parametrize("cls", [TFN, LMF])
def test_leading_shapes_jit_and_vmap(cls):
    x, y, _ = _inputs(7, 6, 5, 7, 3)
    module = cls(3)
    params = {"params": _params(module, x, y)}
    apply = jax.jit(lambda a, b: module.apply(params, a, b))
    flat = apply(x, y)
    np.testing.assert_allclose(apply(x.reshape(2, 3, 5), y.reshape(2, 3, 7)),
                               flat.reshape(2, 3, 3), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jax.vmap(apply)(x, y), flat, rtol=1e-5, atol=1e-6)
    # One y shared by every x (broadcast leading shapes).
    np.testing.assert_allclose(apply(x, y[0]), jax.vmap(apply, (0, None))(x, y[0]), rtol=1e-5,
                               atol=1e-6)


def test_tensor_fusion_rejects_bad_arguments():
    x, y = jnp.ones((2, 5)), jnp.ones((2, 7))
    kernel, bias = jnp.ones((6, 8, 3)), jnp.ones(3)
    with pytest.raises(ValueError, match="kernel"):
        tensor_fusion(x, y, kernel[:, :-1], bias)
    with pytest.raises(ValueError, match="dropout_rate"):
        tensor_fusion(x, y, kernel, bias, dropout_rate=1.0, dropout_rng=jax.random.PRNGKey(0))
