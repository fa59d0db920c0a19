"""Factorized bilinear pooling (MFB; design brief section 2.4).

For x in R^m and y in R^n the kernel computes

    p = (x W_x + b_x) * (y W_y + b_y)           W_x: (m, k*o), W_y: (n, k*o)
    p = dropout(p)                              training only
    z_j = sum_{r<k} p[j*k + r]                  sum-pool over k ADJACENT entries
    z = sign(z) * sqrt(|z|)                     gradient kept finite at 0
    z = z / max(||z||_2, 1e-12)

The cost is the two projection GEMMs; everything after them is one elementwise/reduction pass that
XLA fuses. Inputs may be float32 or bfloat16: the GEMMs accumulate in float32 and all the
elementwise work runs in float32; the result is cast back to the input dtype.

Per-example modality weights (AG-FBP) are applied by scaling x and y before the call:
(w x) W_x + b_x scales the projection but not its bias, so the weights survive the L2
normalisation. Callers build on this one kernel rather than a variant of it.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

# Floor on |z| in the derivative of the signed square root: d sqrt(|z|) / dz = 0.5 / sqrt(|z|)
# is unbounded at 0, so it is evaluated at max(|z|, floor) there (at most 5e5).
SQRT_GRAD_FLOOR = 1e-12
# Floor on the L2 norm (torch.nn.functional.normalize's eps, as in the original MFB code).
NORM_FLOOR = 1e-12


@jax.custom_jvp
def signed_sqrt(z: jax.Array) -> jax.Array:
    """sign(z) * sqrt(|z|), with a derivative that stays finite where z == 0."""
    return jnp.sign(z) * jnp.sqrt(jnp.abs(z))


@signed_sqrt.defjvp
def _signed_sqrt_jvp(primals, tangents):
    (z,), (dz,) = primals, tangents
    slope = 0.5 * lax.rsqrt(jnp.maximum(jnp.abs(z), SQRT_GRAD_FLOOR))
    return signed_sqrt(z), dz * slope


def l2_normalize(z: jax.Array, axis: int = -1, floor: float = NORM_FLOOR) -> jax.Array:
    """z / max(||z||_2, floor) along `axis`; gradients stay finite for an all-zero row."""
    sq = jnp.sum(jnp.square(z), axis=axis, keepdims=True)
    # max() before sqrt: the sqrt is never evaluated at 0, so its gradient stays finite.
    return z * lax.rsqrt(jnp.maximum(sq, floor * floor))


def _project(v: jax.Array, w: jax.Array, b: jax.Array | None) -> jax.Array:
    """v @ w (+ b), in v's dtype with float32 accumulation; returns float32."""
    out = jnp.dot(v, w.astype(v.dtype), preferred_element_type=jnp.float32)
    return out if b is None else out + b.astype(jnp.float32)


def fbp(
    x: jax.Array,
    y: jax.Array,
    w_x: jax.Array,
    w_y: jax.Array,
    b_x: jax.Array | None,
    b_y: jax.Array | None,
    *,
    k: int,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
) -> jax.Array:
    """Factorized bilinear pooling of x (B, m) and y (B, n) into (B, o), o = w_x.shape[1] // k.

    Dropout on the product is applied only when `dropout_rng` is given and the rate is > 0.
    Works on any leading batch shape (and under vmap with unbatched x, y).
    """
    ko = w_x.shape[-1]
    if w_y.shape[-1] != ko or ko % k:
        raise ValueError(f"fbp: w_x {w_x.shape} and w_y {w_y.shape} must both have k*o columns"
                         f" with k={k}")
    p = _project(x, w_x, b_x) * _project(y, w_y, b_y)  # (..., k*o) float32
    if dropout_rng is not None and dropout_rate > 0.0:
        keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, p.shape)
        p = jnp.where(keep, p / (1.0 - dropout_rate), 0.0)
    z = p.reshape(*p.shape[:-1], ko // k, k).sum(axis=-1)  # adjacent groups of k
    z = l2_normalize(signed_sqrt(z))
    return z.astype(jnp.result_type(x.dtype, y.dtype))


def torch_linear_bias_init(fan_in: int):
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)), torch.nn.Linear's bias init (as in the MFB code).

    Non-zero biases matter here: with zero biases a per-example scale on x or y factors out of
    the product and is cancelled by the L2 normalisation.
    """
    bound = 1.0 / math.sqrt(max(fan_in, 1))

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class FBP(nn.Module):
    """Linen wrapper of `fbp`: owns W_x, W_y (lecun normal) and b_x, b_y (torch-style uniform).

    Attributes:
      k: factor (entries summed per output).
      o: output size.
      dropout_rate: dropout on the product, active when `deterministic=False`.
      use_bias: projection biases (keep on for AG-FBP, see `torch_linear_bias_init`).
      dtype: compute dtype of the projections (parameters stay float32).
      impl: "xla" (`fbp`) or "pallas" (`ops.fbp_pallas.fbp_pallas`, the fused kernel; its
        dropout mask is a hash, not jax.random). Same parameters, same function.
    """

    k: int = 5
    o: int = 1000
    dropout_rate: float = 0.1
    use_bias: bool = True
    dtype: jnp.dtype = jnp.float32
    impl: str = "xla"

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array, *, deterministic: bool = True) -> jax.Array:
        ko = self.k * self.o
        m, n = x.shape[-1], y.shape[-1]
        w_x = self.param("w_x", nn.initializers.lecun_normal(), (m, ko), jnp.float32)
        w_y = self.param("w_y", nn.initializers.lecun_normal(), (n, ko), jnp.float32)
        b_x = b_y = None
        if self.use_bias:
            b_x = self.param("b_x", torch_linear_bias_init(m), (ko,), jnp.float32)
            b_y = self.param("b_y", torch_linear_bias_init(n), (ko,), jnp.float32)
        rng = None
        if not deterministic and self.dropout_rate > 0.0:
            rng = self.make_rng("dropout")
        if self.impl == "xla":
            kernel = fbp
        elif self.impl == "pallas":
            # Imported here: ops.fbp_pallas imports this module.
            from avfbp_jax.ops.fbp_pallas import fbp_pallas as kernel
        else:
            raise ValueError(f"FBP impl must be 'xla' or 'pallas', got {self.impl!r}")
        return kernel(x.astype(self.dtype), y.astype(self.dtype), w_x, w_y, b_x, b_y, k=self.k,
                      dropout_rate=self.dropout_rate, dropout_rng=rng)
