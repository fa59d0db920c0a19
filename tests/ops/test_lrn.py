"""Local response normalisation against a direct per-channel loop (Caffe / torch semantics)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avfbp_jax.ops import local_response_norm


def _lrn_loop(x, size, alpha, beta, k):
    """b_c = a_c / (k + alpha/size * sum over [c - size//2, c + (size-1)//2] of a^2) ** beta."""
    channels = x.shape[-1]
    out = np.empty_like(x, dtype=np.float64)
    for c in range(channels):
        lo, hi = c - size // 2, c + (size - 1) // 2
        total = sum(x[..., j].astype(np.float64) ** 2 for j in range(lo, hi + 1)
                    if 0 <= j < channels)  # zero padding: out-of-range channels add nothing
        out[..., c] = x[..., c] / (k + alpha / size * total) ** beta
    return out


@pytest.mark.parametrize("size", [1, 2, 4, 5, 6])
def test_matches_per_channel_loop(size):
    x = np.random.default_rng(size).standard_normal((2, 3, 4, 9)).astype(np.float32) * 20
    got = local_response_norm(jnp.asarray(x), size=size, alpha=1e-2, beta=0.75, k=2.0)
    np.testing.assert_allclose(got, _lrn_loop(x, size, 1e-2, 0.75, 2.0), rtol=1e-5)


def test_defaults_are_the_design_values():
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32) * 100
    np.testing.assert_allclose(local_response_norm(jnp.asarray(x)),
                               _lrn_loop(x, 5, 1e-4, 0.75, 2.0), rtol=1e-5)


def test_alpha_is_divided_by_size_at_the_edges_too():
    # One non-zero channel at the edge: its window is zero-padded, the divisor stays `size`.
    x = np.zeros((1, 6), np.float32)
    x[0, 0] = 10.0
    got = np.asarray(local_response_norm(jnp.asarray(x), size=5, alpha=0.5, beta=1.0, k=1.0))
    assert got[0, 0] == pytest.approx(10.0 / (1.0 + 0.5 / 5 * 100.0))


def test_matches_torch_when_installed():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).standard_normal((2, 11, 3, 5)).astype(np.float32) * 10
    ref = torch.nn.LocalResponseNorm(5, alpha=1e-2, beta=0.75, k=2.0)(torch.from_numpy(x))
    got = local_response_norm(jnp.asarray(x).transpose(0, 2, 3, 1), 5, 1e-2, 0.75, 2.0)
    np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2), ref.numpy(), rtol=1e-5,
                               atol=1e-6)


def test_dtype_gradient_and_jit():
    x = jnp.asarray(np.random.default_rng(2).standard_normal((4, 7)), jnp.bfloat16)
    assert local_response_norm(x).dtype == jnp.bfloat16
    xf = x.astype(jnp.float32)
    grad = jax.grad(lambda a: jnp.sum(local_response_norm(a, alpha=1.0) ** 2))(xf)
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(jax.jit(local_response_norm)(xf), local_response_norm(xf))
