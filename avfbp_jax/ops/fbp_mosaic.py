"""Fused factorized bilinear pooling on Mosaic GPU: `ops.fbp_pallas` for Hopper's Pallas backend.

The same function and the same fusion as `ops.fbp_pallas` (see its docstring): one kernel
computes, per (rows x output units) tile, both projections, the biases, the product, the dropout
and the sum over k, and writes only the pre-sqrt pooled z (B, o); signed sqrt and the L2 norm
are a small XLA pass. jax 0.11 deprecates the Triton backend of Pallas in favour of Mosaic GPU;
this module is the Mosaic GPU version, written against jax.experimental.pallas.mosaic_gpu
(`plgpu.kernel`, `plgpu.emit_pipeline`, `plgpu.wgmma`), after the Hopper matmul in jax's
pallas/ops/gpu/hopper_matmul_mgpu.py and the "Mosaic GPU Pipelining" guide (docs.jax.dev).

Kernel. Grid (rows / block_b, o / block_o), one warpgroup (128 threads) per tile. For each
group r < k the tile runs two TMA pipelines over the contraction: chunks x[i-block, c-chunk]
(block_b, block_k) and W_x^T[r, j-block, c-chunk] (block_o, block_k) are copied into shared
memory (128-byte swizzled) by the TMA unit while the previous chunk's wgmma accumulates
x W_x[:, r, j-block] into a float32 register tile; likewise y and W_y. The epilogue adds the
biases, multiplies, applies the dropout mask and adds the product to the running z tile, which
is written to device memory through shared memory at the end.

Layout. wgmma reads float32 operands only K-major (no transposes for 32-bit types), so W is
passed as W^T per group: (m, k*o) -> (k, o, m), zero-padded as in `fbp_pallas`. block_k is one
128-byte swizzle row: 32 float32 or 64 bfloat16 entries.

Precision. float32 operands run as TF32 (10-bit mantissa) on the tensor cores whatever
jax.default_matmul_precision says (wgmma has no full-float32 mode); bfloat16 runs as bfloat16;
both accumulate in float32. In interpret mode the dots are the CPU's float32 dots.

Backward and dropout: those of `fbp_pallas` (its custom-VJP backward with XLA dots, residuals
"recompute", and its hash mask `dropout_keep_mask`), so for the same rng both kernels give the
same outputs and gradients.

Requirements: jax >= 0.11 (`MOSAIC_GPU_SUPPORTED`) and a Hopper GPU (sm_90a: H100, H200) for
real runs; `interpret=None` runs Pallas's Mosaic GPU interpreter when the default backend is the
CPU. On jax < 0.11 calls raise a RuntimeError.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from avfbp_jax.ops.bilinear_common import l2_normalize, shared_columns, signed_sqrt
from avfbp_jax.ops.fbp_pallas import _blocked, _keep, _pad_to, _pooled_bwd, dropout_seed

# jax 0.11 exports the Mosaic GPU interpreter (plgpu.InterpretGPUParams, for CPU runs) and takes
# plgpu.load(ref, layout=...) as used here; jax 0.10 has neither publicly.
MOSAIC_GPU_SUPPORTED = hasattr(plgpu, "InterpretGPUParams")
# Tile defaults. One warpgroup holds three float32 (block_b, block_o) tiles in registers (the two
# projections and the running z): 3 * 64 * 64 / 128 = 96 registers a thread. A pipeline stage
# stages (block_b + block_o) * 128 bytes (16 KiB); STAGES of them are in flight.
BLOCK_B = 64
BLOCK_O = 64
STAGES = 4
SWIZZLE = 128  # bytes: one swizzled shared-memory row holds one contraction chunk
WGMMA_M = 64  # rows of one wgmma instruction; block_b is a multiple of it
WGMMA_N = 8  # block_o is a multiple of it (and at most 256)


class _Settings(NamedTuple):
    """The static settings of one call (`rate` is also what fbp_pallas's backward reads)."""

    rate: float
    interpret: bool
    block_b: int
    block_o: int


def _block_k(dtype) -> int:
    """Contraction chunk: the entries of `dtype` in one 128-byte swizzle row."""
    return SWIZZLE // jnp.dtype(dtype).itemsize


def _kernel(x_gmem, y_gmem, wx_gmem, wy_gmem, bx_gmem, by_gmem, seed_gmem, z_gmem, z_smem,
            *, settings: _Settings):
    """One (block_b, block_o) tile of z: program ("rows", "units") = (i, j)."""
    block_b, block_o = settings.block_b, settings.block_o
    k = wx_gmem.shape[0]
    i, j = lax.axis_index("rows"), lax.axis_index("units")
    rows, units = pl.ds(i * block_b, block_b), pl.ds(j * block_o, block_o)

    def project(v_gmem, w_gmem, b_gmem, r):
        """v[i-block] @ W^T[r, j-block]^T + b[r, j-block]: (block_b, block_o) float32."""
        block_k = _block_k(v_gmem.dtype)
        transforms = (plgpu.TilingTransform((8, block_k)), plgpu.SwizzleTransform(SWIZZLE))
        spec = lambda shape, index_map: plgpu.BlockSpec(shape, index_map, transforms=transforms,
                                                        delay_release=1)

        def accumulate(acc_ref):
            def step(_, v_smem, w_smem):
                plgpu.wgmma(acc_ref, v_smem, plgpu.transpose_ref(w_smem, (1, 0)))
                plgpu.wgmma_wait(1)  # keep one wgmma in flight; delay_release guards its operands

            plgpu.emit_pipeline(
                step,
                grid=(v_gmem.shape[1] // block_k,),
                in_specs=[spec((block_b, block_k), lambda c: (i, c)),
                          spec((block_o, block_k), lambda c: (j, c))],
                max_concurrent_steps=STAGES,
            )(v_gmem, w_gmem.at[r])
            return acc_ref[...]

        acc = pl.run_scoped(accumulate, plgpu.ACC((block_b, block_o), jnp.float32))
        # The bias row straight from device memory in the accumulator's column layout (jax 0.11
        # has no optimized form of this load; it is block_o floats per group).
        bias = plgpu.load(b_gmem.at[r, units], layout=plgpu.Layout.WGMMA.reduce(0),
                          optimized=False)
        return acc + lax.broadcast_in_dim(bias, (block_b, block_o), [1])

    def group(r, z):
        p = project(x_gmem, wx_gmem, bx_gmem, r) * project(y_gmem, wy_gmem, by_gmem, r)
        if settings.rate > 0.0:
            iota = functools.partial(plgpu.broadcasted_iota, jnp.int32, (block_b, block_o),
                                     layout=plgpu.Layout.WGMMA)
            row = (iota(dimension=0) + i * block_b).astype(jnp.uint32) + seed_gmem[1]
            col = ((iota(dimension=1) + j * block_o) * k + r).astype(jnp.uint32)
            keep = _keep(seed_gmem[0], row, col, settings.rate)
            p = jnp.where(keep, p / (1.0 - settings.rate), 0.0)
        return z + p

    zeros = plgpu.layout_cast(jnp.zeros((block_b, block_o), jnp.float32), plgpu.Layout.WGMMA)
    z_smem[...] = lax.fori_loop(0, k, group, zeros)
    plgpu.commit_smem()
    plgpu.copy_smem_to_gmem(z_smem, z_gmem.at[rows, units])
    plgpu.wait_smem_to_gmem(0)


def _fused(settings: _Settings, x, y, wx_t, wy_t, bx, by, seed):
    """The Mosaic GPU kernel on padded operands (W^T as (k, o, m)): z (B, o) float32."""
    rows, o = x.shape[0], wx_t.shape[1]
    block_b, block_o = settings.block_b, settings.block_o
    interpret = plgpu.InterpretGPUParams() if settings.interpret else None
    return plgpu.kernel(
        functools.partial(_kernel, settings=settings),
        out_type=jax.ShapeDtypeStruct((rows, o), jnp.float32),
        scratch_types=[plgpu.SMEM((block_b, block_o), jnp.float32)],
        grid=(rows // block_b, o // block_o),
        grid_names=("rows", "units"),
        kernel_name="fbp_mosaic",
        interpret=interpret,
    )(x, y, wx_t, wy_t, bx, by, seed)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _pooled(settings: _Settings, x, y, wx, wy, bx, by, seed):
    """z[b, j] = sum_r dropout((x wx[:, r, j] + bx[r, j]) * (y wy[:, r, j] + by[r, j]))."""
    return _pooled_fwd(settings, x, y, wx, wy, bx, by, seed)[0]


def _pooled_fwd(settings, x, y, wx, wy, bx, by, seed):
    """The kernel's z and, for fbp_pallas's backward, its residuals (wx, wy as (m, k, o))."""
    z = _fused(settings, x, y, wx.transpose(1, 2, 0), wy.transpose(1, 2, 0), bx, by, seed)
    return z, (x, y, wx, wy, bx, by, seed, None)


_pooled.defvjp(_pooled_fwd, _pooled_bwd)


def _check_block(name: str, block: int, multiple: int, largest: int) -> None:
    if block % multiple or not 0 < block <= largest:
        raise ValueError(f"fbp_mosaic: {name}={block} must be a multiple of {multiple} "
                         f"and at most {largest}")


def fbp_mosaic(
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
    row_offset: int | jax.Array = 0,
    interpret: bool | None = None,
    block_b: int | None = None,
    block_o: int | None = None,
) -> jax.Array:
    """`ops.fbp.fbp` as one fused Mosaic GPU kernel plus a small XLA pass; same arguments and
    result. Dropout and `row_offset` as in `fbp_pallas`: the hash mask of `dropout_keep_mask`
    over global rows, the first row of x being row `row_offset` (a shard of a larger batch).

    `interpret`: the Mosaic GPU interpreter (None: when the default backend is the CPU).
    `block_b`: rows per tile, a multiple of 64 (None: BLOCK_B); `block_o`: output units per
    tile, a multiple of 8 up to 256 (None: BLOCK_O, or o rounded up to 8 if smaller).
    """
    if not MOSAIC_GPU_SUPPORTED:
        raise RuntimeError(f"fbp_mosaic needs jax >= 0.11 (Mosaic GPU), found {jax.__version__}")
    m, n, ko = x.shape[-1], y.shape[-1], shared_columns("fbp_mosaic", w_x, w_y, k)
    if w_x.shape != (m, ko) or w_y.shape != (n, ko):
        raise ValueError(f"fbp_mosaic: w_x {w_x.shape} and w_y {w_y.shape} do not fit x "
                         f"{x.shape} and y {y.shape}")
    if x.shape[:-1] != y.shape[:-1]:
        raise ValueError(f"fbp_mosaic: x {x.shape} and y {y.shape} must have the same leading "
                         "shape")
    o = ko // k
    lead = x.shape[:-1]
    x2, y2 = x.reshape(-1, m), y.reshape(-1, n)
    block_b = BLOCK_B if block_b is None else block_b
    block_o = min(BLOCK_O, -(-o // WGMMA_N) * WGMMA_N) if block_o is None else block_o
    _check_block("block_b", block_b, WGMMA_M, 2 * WGMMA_M)
    _check_block("block_o", block_o, WGMMA_N, 256)
    dropout = dropout_rng is not None and dropout_rate > 0.0
    settings = _Settings(
        rate=float(dropout_rate) if dropout else 0.0,
        interpret=jax.default_backend() == "cpu" if interpret is None else bool(interpret),
        block_b=block_b,
        block_o=block_o,
    )
    seed = dropout_seed(dropout_rng) if dropout else jnp.zeros((1,), jnp.uint32)
    seed = jnp.concatenate([seed, jnp.asarray(row_offset, jnp.uint32).reshape(1)])
    wx, bx = _blocked(w_x, b_x, k, x.dtype)
    wy, by = _blocked(w_y, b_y, k, y.dtype)
    block_k_x, block_k_y = _block_k(x.dtype), _block_k(y.dtype)
    z = _pooled(
        settings,
        _pad_to(x2, (block_b, block_k_x)),
        _pad_to(y2, (block_b, block_k_y)),
        _pad_to(wx, (block_k_x, 1, block_o)),
        _pad_to(wy, (block_k_y, 1, block_o)),
        _pad_to(bx, (1, block_o)),
        _pad_to(by, (1, block_o)),
        seed,
    )[:x2.shape[0], :o]
    z = l2_normalize(signed_sqrt(z))
    return z.astype(jnp.result_type(x.dtype, y.dtype)).reshape(*lead, o)
