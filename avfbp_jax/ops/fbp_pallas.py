"""Fused factorized bilinear pooling in Pallas: the function of `ops.fbp.fbp` in one GPU kernel.

`fbp` runs two projection GEMMs that write the (B, k*o) projections to device memory, then an
elementwise pass that reads them back to multiply, sum over k and normalise. Here one Pallas
kernel computes, per tile of (rows x output units), both projections, the biases, the product,
the dropout and the sum over k, accumulating in float32 registers, and writes only the pre-sqrt
pooled z (B, o). Signed sqrt and the L2 norm are a second small XLA pass over z.

Layout. The MFB layout sums k ADJACENT columns (z_j = sum_r p[j*k + r]) and k = 5, o = 1000 are
not powers of two, which Triton's blocks must be. At call time W (m, k*o) is permuted to
(m, k, o), so that group r of every output unit is one contiguous (m, o) slab, and zero-padded:
o to a multiple of the output block, m and n to a multiple of the contraction chunk, the rows to a
multiple of the row block. Parameters and checkpoints keep the MFB layout.

Grid (rows / block_b, o / block_o). Program (i, j) reads x[i-block] (block_b, m) and the
(m, k, block_o) slab of W_x (likewise y, W_y), and for r < k and contraction chunks of
block_k accumulates x W_x[:, r, j-block] and y W_y[:, r, j-block] into two (block_b, block_o)
float32 tiles, adds the biases, multiplies, applies the dropout mask and adds the product to a
third tile; it writes that (block_b, block_o) float32 tile of z. Per tile it reads
k * (block_b + block_o) * (m + n) input elements (as a GEMM with the same tiles would) and writes
block_b * block_o floats; the (B, k*o) projections never reach device memory.

Backward: a custom VJP, with XLA dots (not Pallas). `residuals` chooses what the forward keeps:
"recompute" keeps only the (padded, permuted) inputs and recomputes the two projections in the
backward (two extra GEMMs); "keep" has the forward kernel also write both projections (B, k, o)
in float32 and reads them back (2 * 4 * B * k * o bytes each way). Which is faster is measured by
tools/bench_fbp.py on a GPU.

Dropout. Pallas has no portable in-kernel RNG on GPU, so the mask is a counter-based integer hash
of (seed, row, column) with a uint32 seed drawn from `dropout_rng`; `dropout_keep_mask` gives the
same mask as a jnp array. The row is global: a call on a block of rows (one device's share under
`ops.device_rows.on_device_rows`) passes the block's first row as `row_offset`, and the kernel
gets (seed, row_offset) as its (2,) uint32 seed operand, so the mask does not depend on how the
batch is split over devices. `fbp` draws its mask with jax.random.bernoulli instead, so the two
agree exactly only without dropout (both drop each product with probability `dropout_rate`).

Precision. Inputs are float32 or bfloat16; every dot accumulates in float32 with the default
precision, as `fbp`: jax.default_matmul_precision applies to both. On an Ampere-or-later GPU that
default runs float32 dots in TF32 (Triton's and XLA's alike); under
`jax.default_matmul_precision("highest")` they run in full float32.

Backends: on GPU the kernel lowers through Triton (chosen by its CompilerParams, which jax 0.10
and 0.11 both honour); on CPU it runs in Pallas interpret mode (`interpret=None` picks that when
the default backend is the CPU). Mosaic GPU is not used.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

from avfbp_jax.ops.bilinear_common import l2_normalize, shared_columns, signed_sqrt

RESIDUALS = ("recompute", "keep")
# Tile defaults for an H100/H200-class GPU. A (128 x 64) output tile with a 32-deep contraction
# chunk is a standard Triton GEMM tile; the kernel holds three float32 tiles (two projections and
# the running z), 3 * 128 * 64 floats over 8 warps = 96 registers a thread, and stages
# (128 + 64) * 32 * 4 bytes = 24 KiB of operands per pipeline stage in shared memory (float32).
# tools/bench_fbp.py can try other block_b / block_o.
BLOCK_B = 128
BLOCK_O = 64
BLOCK_K = 32
NUM_WARPS = 8
NUM_STAGES = 3
# Triton's dot needs every dimension >= 16, and its blocks must be powers of two.
MIN_BLOCK = 16

# Multipliers of the lowbias32 integer hash (C. Wellons, "Prospecting for hash functions").
_HASH_MUL_1 = np.uint32(0x7FEB352D)
_HASH_MUL_2 = np.uint32(0x846CA68B)
_KEEP_BITS = 24  # the mask compares the hash's top 24 bits with round(rate * 2**24)


def _mix32(h: jax.Array) -> jax.Array:
    """lowbias32: a bijective uint32 hash in which each output bit depends on every input bit."""
    h = h ^ (h >> 16)
    h = h * _HASH_MUL_1
    h = h ^ (h >> 15)
    h = h * _HASH_MUL_2
    return h ^ (h >> 16)


def _keep(seed: jax.Array, rows: jax.Array, cols: jax.Array, rate: float) -> jax.Array:
    """True where dropout keeps product p[row, col] (uint32 indices, MFB column order)."""
    bits = _mix32(_mix32(seed ^ rows) + cols) >> (32 - _KEEP_BITS)
    return bits.astype(jnp.int32) >= round(rate * 2**_KEEP_BITS)


def dropout_seed(dropout_rng: jax.Array) -> jax.Array:
    """The uint32 seed (shape (1,)) that `fbp_pallas` draws from its dropout_rng."""
    return jax.random.bits(dropout_rng, (1,), jnp.uint32)


def dropout_keep_mask(seed: jax.Array, shape: tuple[int, int], rate: float,
                      row_offset: int | jax.Array = 0) -> jax.Array:
    """The keep mask that `fbp_pallas` applies to the product p (rows, k*o), MFB column order.

    `seed` comes from `dropout_seed`; rows are those of the inputs reshaped to 2-D, numbered
    from `row_offset` (the `row_offset` of the `fbp_pallas` call). Each entry is kept with
    probability 1 - rate (to 2**-24).
    """
    rows = lax.broadcasted_iota(jnp.uint32, shape, 0) + jnp.asarray(row_offset, jnp.uint32)
    cols = lax.broadcasted_iota(jnp.uint32, shape, 1)
    return _keep(jnp.asarray(seed, jnp.uint32).reshape(()), rows, cols, rate)


class _Settings(NamedTuple):
    """The static settings of one call (hashable: a custom_vjp non-differentiable argument)."""

    rate: float
    residuals: str
    interpret: bool
    block_b: int
    block_o: int
    block_k_x: int
    block_k_y: int


def _kernel(x_ref, y_ref, wx_ref, wy_ref, bx_ref, by_ref, seed_ref, z_ref, *proj_refs,
            settings: _Settings):
    """One (block_b, block_o) tile of z; also the projections' tiles when proj_refs are given."""
    block_b, block_o = z_ref.shape
    k = wx_ref.shape[1]
    i, j = pl.program_id(0), pl.program_id(1)

    def project(v_ref, w_ref, b_ref, block_k, r):
        def chunk(c, acc):
            start = pl.multiple_of(c * block_k, block_k)
            v = v_ref[:, pl.ds(start, block_k)]
            w = w_ref[pl.ds(start, block_k), r, :]
            return acc + jnp.dot(v, w, preferred_element_type=jnp.float32)

        acc = lax.fori_loop(0, v_ref.shape[1] // block_k, chunk,
                            jnp.zeros((block_b, block_o), jnp.float32))
        return acc + b_ref[pl.ds(r, 1), :]

    def group(r, z):
        px = project(x_ref, wx_ref, bx_ref, settings.block_k_x, r)
        py = project(y_ref, wy_ref, by_ref, settings.block_k_y, r)
        if proj_refs:
            proj_refs[0][:, r, :] = px
            proj_refs[1][:, r, :] = py
        p = px * py
        if settings.rate > 0.0:  # seed_ref: (seed, row_offset)
            rows = i * block_b + lax.broadcasted_iota(jnp.int32, (block_b, block_o), 0)
            units = j * block_o + lax.broadcasted_iota(jnp.int32, (block_b, block_o), 1)
            keep = _keep(seed_ref[0], rows.astype(jnp.uint32) + seed_ref[1],
                         (units * k + r).astype(jnp.uint32), settings.rate)
            p = jnp.where(keep, p / (1.0 - settings.rate), 0.0)
        return z + p

    z_ref[...] = lax.fori_loop(0, k, group, jnp.zeros((block_b, block_o), jnp.float32))


def _fused(settings: _Settings, x, y, wx, wy, bx, by, seed, *, with_projections: bool):
    """pallas_call of `_kernel` on padded operands: z (B, o) [, px, py (B, k, o)], float32."""
    rows, m = x.shape
    n = y.shape[1]
    _, k, o = wx.shape
    block_b, block_o = settings.block_b, settings.block_o
    rows_block = lambda width: pl.BlockSpec((block_b, width), lambda i, j: (i, 0))
    slab = lambda depth: pl.BlockSpec((depth, k, block_o), lambda i, j: (0, 0, j))
    bias = pl.BlockSpec((k, block_o), lambda i, j: (0, j))
    out_shape = [jax.ShapeDtypeStruct((rows, o), jnp.float32)]
    out_specs = [pl.BlockSpec((block_b, block_o), lambda i, j: (i, j))]
    if with_projections:
        out_shape += [jax.ShapeDtypeStruct((rows, k, o), jnp.float32)] * 2
        out_specs += [pl.BlockSpec((block_b, k, block_o), lambda i, j: (i, 0, j))] * 2
    return pl.pallas_call(
        functools.partial(_kernel, settings=settings),
        out_shape=out_shape,
        grid=(rows // block_b, o // block_o),
        in_specs=[rows_block(m), rows_block(n), slab(m), slab(n), bias, bias,
                  pl.BlockSpec((2,), lambda i, j: (0,))],
        out_specs=out_specs,
        compiler_params=plt.CompilerParams(num_warps=NUM_WARPS, num_stages=NUM_STAGES),
        interpret=settings.interpret,
        name="fbp_pallas",
    )(x, y, wx, wy, bx, by, seed)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _pooled(settings: _Settings, x, y, wx, wy, bx, by, seed):
    """z[b, j] = sum_r dropout((x wx[:, r, j] + bx[r, j]) * (y wy[:, r, j] + by[r, j]))."""
    (z,) = _fused(settings, x, y, wx, wy, bx, by, seed, with_projections=False)
    return z


def _pooled_fwd(settings, x, y, wx, wy, bx, by, seed):
    if settings.residuals == "keep":
        z, px, py = _fused(settings, x, y, wx, wy, bx, by, seed, with_projections=True)
        projections = (px, py)
    else:
        (z,) = _fused(settings, x, y, wx, wy, bx, by, seed, with_projections=False)
        projections = None
    return z, (x, y, wx, wy, bx, by, seed, projections)


def _project(v, w, b):
    """v (B, m) @ w (m, k, o) + b (k, o) -> (B, k, o), float32 accumulation."""
    out = jnp.dot(v, w.reshape(w.shape[0], -1), preferred_element_type=jnp.float32)
    return out.reshape(v.shape[0], *w.shape[1:]) + b


def _project_vjp(v, w, g):
    """Cotangents of v, w and b of `_project` for the float32 cotangent g (B, k, o).

    g is cast to v's dtype, so bfloat16 inputs get bfloat16 GEMMs (float32 accumulation).
    """
    g2 = g.reshape(g.shape[0], -1).astype(v.dtype)
    w2 = w.reshape(w.shape[0], -1)
    g_v = jnp.dot(g2, w2.T, preferred_element_type=jnp.float32).astype(v.dtype)
    g_w = jnp.dot(v.T, g2, preferred_element_type=jnp.float32).reshape(w.shape).astype(w.dtype)
    return g_v, g_w, jnp.sum(g, axis=0)


def _pooled_bwd(settings, residuals, g):
    x, y, wx, wy, bx, by, seed, projections = residuals
    if projections is None:
        projections = _project(x, wx, bx), _project(y, wy, by)
    px, py = projections
    rows, k, o = px.shape
    g_p = g[:, None, :]  # d z_j / d p[j*k + r] = 1 for every r
    if settings.rate > 0.0:
        row = lax.broadcasted_iota(jnp.uint32, (rows, k, o), 0) + seed[1]
        col = (lax.broadcasted_iota(jnp.uint32, (rows, k, o), 2) * k
               + lax.broadcasted_iota(jnp.uint32, (rows, k, o), 1))
        keep = _keep(seed[0], row, col, settings.rate)
        g_p = jnp.where(keep, g_p / (1.0 - settings.rate), 0.0)
    g_x, g_wx, g_bx = _project_vjp(x, wx, g_p * py)
    g_y, g_wy, g_by = _project_vjp(y, wy, g_p * px)
    return g_x, g_y, g_wx, g_wy, g_bx, g_by, None


_pooled.defvjp(_pooled_fwd, _pooled_bwd)


def _pow2_block(size: int, largest: int) -> int:
    """The smallest power of two >= size, clamped to [MIN_BLOCK, largest]."""
    return min(largest, max(MIN_BLOCK, 1 << max(size - 1, 0).bit_length()))


def _check_block(name: str, block: int) -> None:
    if block < MIN_BLOCK or block & (block - 1):
        raise ValueError(f"fbp_pallas: {name}={block} must be a power of two >= {MIN_BLOCK}")


def _pad_to(a: jax.Array, multiples: tuple[int, ...]) -> jax.Array:
    """a zero-padded at the end of each axis to a multiple of `multiples`."""
    return jnp.pad(a, [(0, -size % mult) for size, mult in zip(a.shape, multiples, strict=True)])


def _blocked(w: jax.Array, b: jax.Array | None, k: int, dtype) -> tuple[jax.Array, jax.Array]:
    """W (m, k*o) -> (m, k, o) in `dtype` and b (k*o,) -> (k, o) float32 (zeros for None).

    Column j*k + r of the MFB layout becomes [:, r, j]: each group r is one contiguous slab.
    """
    m, ko = w.shape
    w = w.reshape(m, ko // k, k).transpose(0, 2, 1).astype(dtype)
    b = jnp.zeros(ko, jnp.float32) if b is None else b.astype(jnp.float32)
    return w, b.reshape(ko // k, k).T


def fbp_pallas(
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
    residuals: str = "recompute",
    interpret: bool | None = None,
    block_b: int | None = None,
    block_o: int | None = None,
    row_offset: int | jax.Array = 0,
) -> jax.Array:
    """`ops.fbp.fbp` as one fused Pallas kernel plus a small XLA pass; same arguments and result.

    Dropout uses the hash mask of `dropout_keep_mask` (not jax.random.bernoulli), its rows
    numbered from `row_offset` (the global index of the first row when the call sees one block
    of a larger batch, as under `ops.device_rows.on_device_rows`). `residuals`:
    "recompute" or "keep" (see the module docstring). `interpret`: Pallas interpret mode (None:
    when the default backend is the CPU). `block_b`, `block_o`: row and output-unit tile sizes,
    powers of two >= 16 (None: BLOCK_B, BLOCK_O, smaller for small inputs).
    """
    m, n, ko = x.shape[-1], y.shape[-1], shared_columns("fbp_pallas", w_x, w_y, k)
    if w_x.shape != (m, ko) or w_y.shape != (n, ko):
        raise ValueError(f"fbp_pallas: w_x {w_x.shape} and w_y {w_y.shape} do not fit x "
                         f"{x.shape} and y {y.shape}")
    if x.shape[:-1] != y.shape[:-1]:
        raise ValueError(f"fbp_pallas: x {x.shape} and y {y.shape} must have the same leading "
                         "shape")
    if residuals not in RESIDUALS:
        raise ValueError(f"fbp_pallas: residuals must be one of {RESIDUALS}, got {residuals!r}")
    o = ko // k
    lead = x.shape[:-1]
    x2, y2 = x.reshape(-1, m), y.reshape(-1, n)
    rows = x2.shape[0]
    block_b = _pow2_block(rows, BLOCK_B) if block_b is None else block_b
    block_o = _pow2_block(o, BLOCK_O) if block_o is None else block_o
    _check_block("block_b", block_b)
    _check_block("block_o", block_o)
    dropout = dropout_rng is not None and dropout_rate > 0.0
    settings = _Settings(
        rate=float(dropout_rate) if dropout else 0.0,
        residuals=residuals,
        interpret=jax.default_backend() == "cpu" if interpret is None else bool(interpret),
        block_b=block_b,
        block_o=block_o,
        block_k_x=_pow2_block(m, BLOCK_K),
        block_k_y=_pow2_block(n, BLOCK_K),
    )
    seed = dropout_seed(dropout_rng) if dropout else jnp.zeros((1,), jnp.uint32)
    seed = jnp.concatenate([seed, jnp.asarray(row_offset, jnp.uint32).reshape(1)])
    wx, bx = _blocked(w_x, b_x, k, x.dtype)
    wy, by = _blocked(w_y, b_y, k, y.dtype)
    z = _pooled(
        settings,
        _pad_to(x2, (block_b, settings.block_k_x)),
        _pad_to(y2, (block_b, settings.block_k_y)),
        _pad_to(wx, (settings.block_k_x, 1, block_o)),
        _pad_to(wy, (settings.block_k_y, 1, block_o)),
        _pad_to(bx, (1, block_o)),
        _pad_to(by, (1, block_o)),
        seed,
    )[:rows, :o]
    z = l2_normalize(signed_sqrt(z))
    return z.astype(jnp.result_type(x.dtype, y.dtype)).reshape(*lead, o)
