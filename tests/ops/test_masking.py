"""Masks through strides and pools, masked reductions, trunks of the valid time axis."""

from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from avfbp_jax.ops import (
    AttendedSequence,
    attention_pool,
    attention_weights,
    conv_output_length,
    length_mask,
    masked_mean,
    masked_softmax,
    trunk_masks,
    zero_invalid,
)


def _conv1d(x, kernel, stride, pad):
    w = jnp.asarray(np.random.default_rng(0).standard_normal((kernel, 1, 2)), jnp.float32)
    return lax.conv_general_dilated(x[None, :, None], w, (stride,), [(pad, pad)],
                                    dimension_numbers=("NWC", "WIO", "NWC"))[0]


def _max_pool(x, window, stride):
    return lax.reduce_window(x, -jnp.inf, lax.max, (window,), (stride,), "VALID")


@pytest.mark.parametrize("kernel,stride,pad", [(11, 4, 0), (5, 1, 2), (3, 1, 1), (4, 3, 1)])
def test_conv_length_is_exact_length_output_and_padding_invariant(kernel, stride, pad):
    rng = np.random.default_rng(kernel)
    for length in [0, kernel - 1, kernel, kernel + 1, 23]:
        valid = rng.standard_normal(length).astype(np.float32)
        want = conv_output_length(length, kernel, stride, pad)
        exact = _conv1d(jnp.asarray(valid), kernel, stride, pad) if length + 2 * pad >= kernel \
            else jnp.zeros((0, 2))
        assert int(want) == exact.shape[0]
        # Zero-padded further, the first `want` outputs are unchanged.
        for extra in (1, 9):
            padded = _conv1d(jnp.asarray(np.pad(valid, (0, extra))), kernel, stride, pad)
            np.testing.assert_allclose(padded[: int(want)], exact, rtol=1e-6, atol=1e-6)


def test_pool_length_and_same_padding():
    for length in range(0, 12):
        want = int(conv_output_length(length, 3, 2, "VALID"))
        got = _max_pool(jnp.arange(length, dtype=jnp.float32), 3, 2).shape[0] if length >= 3 else 0
        assert want == got
        assert int(conv_output_length(length, 3, 2, "SAME")) == -(-length // 2)
    np.testing.assert_array_equal(conv_output_length(jnp.array([0, 5, 30]), 11, 4), [0, 0, 5])
    with pytest.raises(ValueError):
        conv_output_length(5, 3, 1, "FULL")


def test_zero_invalid_and_length_mask():
    x = jnp.ones((2, 4, 3))
    out = np.asarray(zero_invalid(x, jnp.array([1, 3])))
    np.testing.assert_array_equal(out.sum(axis=(1, 2)), [3, 9])
    np.testing.assert_array_equal(length_mask(jnp.array([0, 2]), 3),
                                  [[False, False, False], [True, True, False]])


def test_masked_softmax_and_mean():
    logits = jnp.array([[1.0, 2.0, 3.0, 50.0], [0.5, -1.0, 2.0, 0.0], [9.0, 9.0, 9.0, 9.0]])
    mask = jnp.array([[True, True, True, False], [False, True, True, False], [False] * 4])
    got = np.asarray(masked_softmax(logits, mask))
    np.testing.assert_allclose(got[0, :3], jax.nn.softmax(logits[0, :3]), rtol=1e-6)
    np.testing.assert_allclose(got[1, 1:3], jax.nn.softmax(logits[1, 1:3]), rtol=1e-6)
    assert got[0, 3] == 0 and got[1, 0] == 0 and np.all(got[2] == 0)
    grad = jax.jit(jax.grad(lambda a: jnp.sum(masked_softmax(a, mask) * jnp.arange(4.0))))(logits)
    assert np.all(np.isfinite(grad)) and np.all(np.asarray(grad)[~np.asarray(mask)] == 0)
    mean = np.asarray(masked_mean(logits, mask, axis=1))
    np.testing.assert_allclose(mean, [2.0, 0.5, 0.0])


def _sequence(lengths, padded, normalizer="softmax", seed=0):
    rng = np.random.default_rng(seed)
    b = len(lengths)
    steps = jnp.broadcast_to(jnp.arange(padded, dtype=jnp.int32), (b, padded))
    lengths = jnp.asarray(lengths, jnp.int32)
    return AttendedSequence(
        features=jnp.asarray(rng.standard_normal((b, padded, 3)), jnp.float32),
        scores=jnp.asarray(rng.standard_normal((b, padded)), jnp.float32),
        mask=length_mask(lengths, padded), step=steps, length=lengths, normalizer=normalizer)


def test_trunks_split_the_valid_length_not_the_padded_one():
    seq = _sequence([10, 2, 0, 7], padded=12)
    masks = np.asarray(trunk_masks(seq, 3))
    for b, length in enumerate([10, 2, 0, 7]):
        for j in range(3):
            want = [length > 0 and t < length and Fraction(j, 3) <= Fraction(t, length)
                    < Fraction(j + 1, 3) for t in range(12)]
            np.testing.assert_array_equal(masks[b, j], want)
    np.testing.assert_array_equal(masks[0].sum(-1), [4, 3, 3])
    np.testing.assert_array_equal(masks[1].sum(-1), [1, 1, 0])  # 2 steps, 3 trunks
    assert not masks[2].any()


@pytest.mark.parametrize("normalizer", ["softmax", "sigmoid"])
def test_trunk_pooling_is_attention_over_each_trunk(normalizer):
    seq = _sequence([9, 4], padded=11, normalizer=normalizer, seed=1)
    masks = trunk_masks(seq, 3)
    pooled, weights = attention_pool(seq, masks)  # [B, N, C], [B, N, L]
    pooled = np.asarray(pooled)
    # Each trunk's weights sum to 1 over its steps (0 for an empty trunk) and vanish elsewhere.
    np.testing.assert_allclose(np.asarray(weights).sum(-1), np.asarray(masks).any(-1), atol=1e-6)
    assert np.all(np.asarray(weights)[~np.asarray(masks)] == 0)
    feats, scores = np.asarray(seq.features), np.asarray(seq.scores)
    for b, length in enumerate([9, 4]):
        for j in range(3):
            idx = [t for t in range(length) if j * length <= 3 * t < (j + 1) * length]
            if normalizer == "softmax":
                w = np.exp(scores[b, idx] - scores[b, idx].max())
            else:
                w = 1 / (1 + np.exp(-scores[b, idx]))
            want = (w / w.sum()) @ feats[b, idx] if idx else np.zeros(3)
            np.testing.assert_allclose(pooled[b, j], want, rtol=1e-5, atol=1e-6)
    weights = np.asarray(attention_weights(seq))
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)
    assert np.all(weights[1, 4:] == 0)


def test_empty_trunks_have_finite_gradients():
    seq = _sequence([2, 0], padded=5)

    def loss(features, scores):
        s = seq._replace(features=features, scores=scores)
        return jnp.sum(attention_pool(s, trunk_masks(s, 3))[0] ** 2)

    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(seq.features, seq.scores)
    assert all(np.all(np.isfinite(g)) for g in grads)
    assert np.all(np.asarray(grads[0])[1] == 0)
