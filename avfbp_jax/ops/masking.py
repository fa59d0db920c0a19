"""Masks and masked reductions, so that padding never changes a result.

Every padded axis in the model is a time axis whose valid part is a prefix, so masks are carried
as valid lengths ([B] int32) and turned into boolean masks where needed. All reductions here are
safe when nothing is valid: they return zeros, and their gradients stay finite.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

Padding = str | int | tuple[int, int]


def length_mask(length: jax.Array, size: int) -> jax.Array:
    """[..., size] bool mask, True at positions < length."""
    return jnp.arange(size) < jnp.asarray(length)[..., None]


def _pads(kernel: int, stride: int, padding: Padding) -> tuple[int, int] | None:
    """Explicit (low, high) padding; None for "SAME" (it depends on the length)."""
    if isinstance(padding, str):
        if padding.upper() == "VALID":
            return (0, 0)
        if padding.upper() == "SAME":
            return None
        raise ValueError(f"unknown padding {padding!r}")
    if isinstance(padding, int):
        return (padding, padding)
    return tuple(padding)


def conv_output_length(
    length: jax.Array | int, kernel: int, stride: int = 1, padding: Padding = "VALID"
) -> jax.Array:
    """Valid output length of a conv/pool along one axis whose input has `length` valid steps.

    It is the output length the same layer gives on an input cut to exactly `length` steps. With
    invalid input steps set to zero (see `zero_invalid`), the outputs at these positions do not
    depend on how far the input was padded, for VALID, SAME and explicit padding alike.
    """
    length = jnp.asarray(length, jnp.int32)
    pads = _pads(kernel, stride, padding)
    if pads is None:
        out = (length + stride - 1) // stride
    else:
        out = (length + pads[0] + pads[1] - kernel) // stride + 1
    return jnp.where(length > 0, jnp.maximum(out, 0), 0).astype(jnp.int32)


def zero_invalid(x: jax.Array, length: jax.Array, axis: int = 1) -> jax.Array:
    """Sets steps >= length along `axis` (batch on axis 0) to zero."""
    mask = length_mask(length, x.shape[axis])  # [B, T]
    shape = [1] * x.ndim
    shape[0], shape[axis] = x.shape[0], x.shape[axis]
    return jnp.where(mask.reshape(shape), x, jnp.zeros((), x.dtype))


def _safe_denominator(d: jax.Array) -> jax.Array:
    return jnp.where(d > 0, d, 1.0)


def masked_mean(x: jax.Array, mask: jax.Array, axis: int | tuple[int, ...]) -> jax.Array:
    """Mean of x over `axis` counting only positions where mask (broadcastable to x) is True.

    Returns 0 where no position is valid.
    """
    mask = jnp.broadcast_to(mask, x.shape)
    total = jnp.sum(jnp.where(mask, x, 0), axis=axis)
    count = jnp.sum(mask, axis=axis, dtype=jnp.float32)
    return (total / _safe_denominator(count)).astype(x.dtype)


def masked_softmax(logits: jax.Array, mask: jax.Array, axis: int = -1) -> jax.Array:
    """Softmax over `axis` restricted to mask; weights are exactly 0 off the mask.

    A row with no valid position gives all zeros (not NaN), with zero gradients. Computed in f32.
    """
    logits = jnp.where(mask, logits.astype(jnp.float32), -jnp.inf)
    peak = jnp.max(logits, axis=axis, keepdims=True)
    peak = jnp.where(jnp.isfinite(peak), peak, 0.0)
    e = jnp.where(mask, jnp.exp(logits - jax.lax.stop_gradient(peak)), 0.0)
    return e / _safe_denominator(jnp.sum(e, axis=axis, keepdims=True))


def masked_normalize(weights: jax.Array, mask: jax.Array, axis: int = -1) -> jax.Array:
    """weights * mask / sum(weights * mask) over `axis` (non-negative weights); 0 if none valid."""
    w = jnp.where(mask, weights.astype(jnp.float32), 0.0)
    return w / _safe_denominator(jnp.sum(w, axis=axis, keepdims=True))


class AttendedSequence(NamedTuple):
    """A stream's output before pooling: steps, their attention scores and where they lie in time.

    features: [B, L, C] step features.
    scores: [B, L] float32 attention logits (already scaled, e.g. by lambda).
    mask: [B, L] bool, True at valid steps.
    step: [B, L] int32 time index of each step (2-D attention repeats it over frequency).
    length: [B] int32 valid time steps of each recording (the denominator of relative time).
    normalizer: "softmax" (masked softmax) or "sigmoid" (sigmoid, then normalised to sum 1).
    cells_per_step: steps sharing one time index, stored contiguously (frequency rows of 2-D
      audio attention; 1 otherwise).
    """

    features: jax.Array
    scores: jax.Array
    mask: jax.Array
    step: jax.Array
    length: jax.Array
    normalizer: str
    cells_per_step: int = 1

    def per_time(self, weights: jax.Array) -> jax.Array:
        """Attention weights [B, L] summed over the cells of each time step: [B, L / cells]."""
        return weights.reshape(weights.shape[0], -1, self.cells_per_step).sum(axis=-1)


def attention_weights(seq: AttendedSequence, mask: jax.Array | None = None) -> jax.Array:
    """Attention weights over the steps of `seq` restricted to `mask` (default: seq.mask).

    `mask` may carry extra leading axes after the batch axis (e.g. [B, N, L] for trunks); each
    masked row gets weights that sum to 1 over its valid steps, or all zeros if it has none.
    """
    mask = seq.mask if mask is None else mask
    scores = jnp.broadcast_to(
        seq.scores.reshape(seq.scores.shape[:1] + (1,) * (mask.ndim - 2) + seq.scores.shape[1:]),
        mask.shape,
    )
    if seq.normalizer == "softmax":
        return masked_softmax(scores, mask)
    if seq.normalizer == "sigmoid":
        return masked_normalize(jax.nn.sigmoid(scores), mask)
    raise ValueError(f"unknown attention normalizer {seq.normalizer!r}")


def attention_pool(
    seq: AttendedSequence, mask: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """(attention-weighted sum of seq.features [B, ..., C] float32, the weights [B, ..., L]).

    See `attention_weights` for `mask`.
    """
    weights = attention_weights(seq, mask)
    return jnp.einsum("b...l,blc->b...c", weights, seq.features.astype(jnp.float32)), weights


def trunk_masks(seq: AttendedSequence, num_trunks: int) -> jax.Array:
    """[B, N, L] masks of N aligned trunks over each recording's VALID time axis.

    Step t of a recording with valid length T belongs to trunk j when t / T lies in
    [j / N, (j + 1) / N), i.e. j = (N * t) // T. Trunks follow the valid length, not the padded
    one; a trunk with no valid step has an all-False row.
    """
    trunk = (num_trunks * seq.step) // jnp.maximum(seq.length, 1)[:, None]  # [B, L]
    return seq.mask[:, None, :] & (trunk[:, None, :] == jnp.arange(num_trunks)[None, :, None])
