"""Local response normalisation across channels (Caffe / torch.nn.LocalResponseNorm semantics)."""

import jax
import jax.numpy as jnp
from jax import lax


def local_response_norm(
    x: jax.Array, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0
) -> jax.Array:
    """b_c = a_c / (k + alpha / size * sum_{c' in window(c)} a_{c'}^2) ** beta over the last axis.

    The window around channel c spans [c - size // 2, c + (size - 1) // 2], zero-padded at the
    edges (so edge channels still divide alpha by the full `size`), exactly as Caffe's
    ACROSS_CHANNELS LRN and torch.nn.LocalResponseNorm. Computed in float32.
    """
    xf = x.astype(jnp.float32)
    window = (1,) * (x.ndim - 1) + (size,)
    padding = ((0, 0),) * (x.ndim - 1) + ((size // 2, (size - 1) // 2),)
    sq_sum = lax.reduce_window(jnp.square(xf), 0.0, lax.add, window, (1,) * x.ndim, padding)
    return (xf * (k + (alpha / size) * sq_sum) ** -beta).astype(x.dtype)
