"""Factorized bilinear pooling (MFB; design brief section 2.4).

For x in R^m and y in R^n the kernel computes

    p = (x W_x + b_x) * (y W_y + b_y)           W_x: (m, k*o), W_y: (n, k*o)
    p = dropout(p)                              training only
    z_j = sum_{r<k} p[j*k + r]                  sum-pool over k ADJACENT entries
    z = sign(z) * sqrt(|z|)                     gradient kept finite at 0
    z = z / max(||z||_2, 1e-12)

The cost is the two projection GEMMs forward and four more backward; everything else is a few
elementwise passes over the (B, k*o) projections. `fbp` has a hand-written VJP that keeps those
passes and buffers few: the forward fuses bias, product, dropout and pool into one pass and keeps
only the bias-free projections; the backward forms d(x W_x) = g_p * (y W_y + b_y) and
d(y W_y) = g_p * (x W_x + b_x), g_p the pooled gradient repeated over k, in one pass each (into
the buffers of the projections), and feeds them to GEMMs whose dimension numbers need no
transposed copies. (JAX's derivative of the plain formula also wrote out the biased projections
and their gradients: 344 MB of XLA:CPU temporaries per call at B = 4096, m = n = 512, k*o = 5000,
against 229 MB; each call page-faults its temporaries afresh.) Inputs may be float32 or bfloat16:
every GEMM (forward and backward) runs in the input dtype with float32 accumulation, all the
elementwise work runs in float32, and the result is cast back to the input dtype.

Per-example modality weights (AG-FBP) are applied by scaling x and y before the call:
(w x) W_x + b_x scales the projection but not its bias, so the weights survive the L2
normalisation. Callers build on this one kernel rather than a variant of it.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from avfbp_jax.ops.bilinear_common import (
    NORM_FLOOR,
    shared_columns,
    signed_sqrt,
    signed_sqrt_slope,
    torch_linear_init,
)
from avfbp_jax.ops.fbp_mosaic import fbp_mosaic
from avfbp_jax.ops.fbp_pallas import fbp_pallas


def _dot(a: jax.Array, b: jax.Array, contract: tuple[int, int]) -> jax.Array:
    """a @ b contracting axis contract[0] of a with axis contract[1] of b; float32 accumulation.

    Naming the contracted axes (rather than transposing an operand) lets the GEMM read both
    operands in place: no transposed copy of a (B, k*o) array is made.
    """
    dims = (((contract[0],), (contract[1],)), ((), ()))
    return lax.dot_general(a, b, dims, preferred_element_type=jnp.float32)


def _add_bias(a: jax.Array, b: jax.Array | None) -> jax.Array:
    return a if b is None else a + b.astype(jnp.float32)


def sum_pool(p: jax.Array, k: int) -> jax.Array:
    """z_j = sum_{r<k} p[..., j*k + r]: the sum over k ADJACENT entries of the last axis
    (MFB's sum pooling; MFH pools each of its stages with it)."""
    p = p.reshape(*p.shape[:-1], -1, k)
    # A sum of k strided slices, not a reduce: under a gradient XLA:CPU fuses it with the bias
    # and the product into one pass, while a reduce made it write px and py out first. (Forward
    # only, XLA:CPU makes one fusion per slice of it; a reduce measured no faster there.)
    z = p[..., 0]
    for r in range(1, k):
        z = z + p[..., r]
    return z


def _pool(px: jax.Array, py: jax.Array, keep: jax.Array | None, k: int, rate: float
          ) -> jax.Array:
    """z_j = sum_{r<k} (px * py * dropout)[:, j*k + r] for float32 (B, k*o) inputs."""
    p = px * py
    if keep is not None:
        p = jnp.where(keep, p / (1.0 - rate), 0.0)
    return sum_pool(p, k)


def _normalize_parts(z: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """s = signed_sqrt(z), its squared row norm sq and r = 1 / max(sqrt(sq), NORM_FLOOR)."""
    s = signed_sqrt(z)
    sq = jnp.sum(jnp.square(s), axis=-1, keepdims=True)
    return s, sq, lax.rsqrt(jnp.maximum(sq, NORM_FLOOR * NORM_FLOOR))


def _fbp_fwd(x, y, w_x, w_y, b_x, b_y, keep, k, rate):
    """Forward pass on (B, m), (B, n) inputs: float32 (B, o) output and the VJP's residuals."""
    ax, ay = _dot(x, w_x, (1, 0)), _dot(y, w_y, (1, 0))  # bias-free projections, kept
    z = _pool(_add_bias(ax, b_x), _add_bias(ay, b_y), keep, k, rate)
    s, _, r = _normalize_parts(z)
    return s * r, (x, y, w_x, w_y, b_x, b_y, keep, ax, ay, z)


def _fbp_bwd(k, rate, res, g):
    x, y, w_x, w_y, b_x, b_y, keep, ax, ay, z = res
    s, sq, r = _normalize_parts(z)
    # d(s * r)/ds applied to g: r g - s r^3 <g, s>, the second term only where the norm is
    # above its floor (below it r is a constant).
    gs = jnp.sum(g * s, axis=-1, keepdims=True)
    ds = r * g - jnp.where(sq > NORM_FLOOR * NORM_FLOOR, s * (r * r * r * gs), 0.0)
    dz = ds * signed_sqrt_slope(z)
    dp = jnp.broadcast_to(dz[:, :, None], (*dz.shape, k)).reshape(ax.shape)
    if keep is not None:
        dp = jnp.where(keep, dp / (1.0 - rate), 0.0)
    d_ax = dp * _add_bias(ay, b_y)
    d_ay = dp * _add_bias(ax, b_x)

    def grads(v, w, b, dv):
        dv_c = dv.astype(v.dtype)  # backward GEMMs in the input dtype, like the forward ones
        dvw = _dot(dv_c, w, (1, 1)).astype(v.dtype)  # dv @ w^T
        dw = _dot(v, dv_c, (0, 0)).astype(w.dtype)  # v^T @ dv
        return dvw, dw, None if b is None else jnp.sum(dv, axis=0).astype(b.dtype)

    dx, dw_x, db_x = grads(x, w_x, b_x, d_ax)
    dy, dw_y, db_y = grads(y, w_y, b_y, d_ay)
    return dx, dy, dw_x, dw_y, db_x, db_y, None


@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8))
def _fbp_2d(x, y, w_x, w_y, b_x, b_y, keep, k, rate):
    return _fbp_fwd(x, y, w_x, w_y, b_x, b_y, keep, k, rate)[0]


_fbp_2d.defvjp(_fbp_fwd, _fbp_bwd)


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
    ko = shared_columns("fbp", w_x, w_y, k)
    lead = jnp.broadcast_shapes(x.shape[:-1], y.shape[:-1])
    x2 = jnp.broadcast_to(x, (*lead, x.shape[-1])).reshape(-1, x.shape[-1])
    y2 = jnp.broadcast_to(y, (*lead, y.shape[-1])).reshape(-1, y.shape[-1])
    keep, rate = None, 0.0
    if dropout_rng is not None and dropout_rate > 0.0:
        keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, (*lead, ko))
        keep, rate = keep.reshape(-1, ko), float(dropout_rate)
    z = _fbp_2d(x2, y2, w_x.astype(x.dtype), w_y.astype(y.dtype), b_x, b_y, keep, k, rate)
    return z.reshape(*lead, ko // k).astype(jnp.result_type(x.dtype, y.dtype))


class FBP(nn.Module):
    """Linen wrapper of `fbp`: owns W_x, W_y (lecun normal) and b_x, b_y (torch-style uniform).

    Attributes:
      k: factor (entries summed per output).
      o: output size.
      dropout_rate: dropout on the product, active when `deterministic=False`.
      use_bias: projection biases (keep on for AG-FBP, see `bilinear_common.torch_linear_init`).
      dtype: compute dtype of the projections (parameters stay float32).
      impl: "xla" (`fbp`), "pallas" (`ops.fbp_pallas.fbp_pallas`, the fused kernel through
        Triton) or "pallas_mosaic" (`ops.fbp_mosaic.fbp_mosaic`, the fused kernel through Mosaic
        GPU: jax >= 0.11, Hopper). The fused kernels' dropout mask is a hash, not jax.random.
        Same parameters, same function.
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
            b_x = self.param("b_x", torch_linear_init(m), (ko,), jnp.float32)
            b_y = self.param("b_y", torch_linear_init(n), (ko,), jnp.float32)
        rng = None
        if not deterministic and self.dropout_rate > 0.0:
            rng = self.make_rng("dropout")
        kernels = {"xla": fbp, "pallas": fbp_pallas, "pallas_mosaic": fbp_mosaic}
        if self.impl not in kernels:
            raise ValueError(f"FBP impl must be one of {tuple(kernels)}, got {self.impl!r}")
        kernel = kernels[self.impl]
        return kernel(x.astype(self.dtype), y.astype(self.dtype), w_x, w_y, b_x, b_y, k=self.k,
                      dropout_rate=self.dropout_rate, dropout_rng=rng)
