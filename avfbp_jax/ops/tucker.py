"""Tucker-decomposed bilinear fusions: Tucker and MUTAN (Ben-younes et al., "MUTAN: Multimodal
Tucker Fusion for Visual Question Answering", ICCV 2017) and BLOCK (Ben-younes et al., "BLOCK:
Bilinear Superdiagonal Fusion for Visual Question Answering and Visual Relationship Detection",
AAAI 2019), as block.bootstrap.pytorch defines them (Cadene et al.,
block/models/networks/fusions/fusions.py, classes Tucker, Mutan, Block and get_sizes_list,
commit e938e9e).

All three are Tucker decompositions of a bilinear map: a core between projections of the inputs
and of the output,

    x0 = dropout_input(W_0 x + b_0),  x1 = dropout_input(W_1 y + b_1)     -> mm_dim each
    z = core(x0, x1)                                                      (mm_dim,)
    out = dropout_output(W_o dropout_pre_lin(z) + b_o)

    Tucker  z_k = sum_ij x0_i T_ijk x1_j + c_k          full core, torch.nn.Bilinear
    MUTAN   z_j = sum_{r<rank} p[r * mm_dim + j],       p = (M_0 x0 + d_0) * (M_1 x1 + d_1),
                                                        M_0, M_1: mm_dim -> rank * mm_dim
    BLOCK   the MUTAN core on each of `chunks` column blocks of x0, x1 (its own M_0, M_1 per
            block; sizes from `chunk_sizes`), the results concatenated and normalised

where "normalised" is z / max(||z||, eps) after z = sign(z) sqrt(|z|). Quirks kept from the
reference: the rank sum is RANK-MAJOR (a view as (rank, d), unlike FBP's adjacent groups);
Tucker and MUTAN normalise only if `normalize` (default off) while BLOCK always does, per block
("before_cat", so the concatenation has norm sqrt(number of blocks)) or once after it
("after_cat"); `shared` (MUTAN, BLOCK) reuses linear0 for y and M_0 for M_1 and needs m == n.
The reference Tucker's `shared` is a no-op (it rebuilds linear1 unconditionally), so ours has
none. The reference's default Tucker core has mm_dim^3 = 4.1e9 parameters at mm_dim 1600 (its
own VQA 2.0 "tucker" option uses a block_tucker of mm_dim 235 instead).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from avfbp_jax.ops.bilinear_common import (
    accumulation_dtype,
    l2_normalize,
    signed_sqrt,
    torch_dense,
    torch_linear_init,
)

POS_NORMS = ("before_cat", "after_cat")


def chunk_sizes(dim: int, chunks: int) -> list[int]:
    """BLOCK's block sizes (the reference's get_sizes_list): ceil(dim / chunks) each, the last
    cut so they sum to dim; if that would make it negative it takes its neighbour's size and the
    surplus is taken back, one unit each, from the last blocks. The last block can be empty
    (dim 10, chunks 6 -> [2, 2, 2, 2, 2, 0]); it then contributes nothing."""
    if dim < 1 or chunks < 1:
        raise ValueError(f"Block mm_dim and chunks must be >= 1, got {dim} and {chunks}")
    size = -(-dim // chunks)
    sizes = [size] * chunks
    sizes[-1] -= size * chunks - dim
    if sizes[-1] < 0:
        surplus = sizes[-2] - sizes[-1]
        sizes[-1] = sizes[-2]
        for j in range(surplus):
            sizes[-1 - j] -= 1
        if min(sizes) < 1:
            raise ValueError(f"Block mm_dim {dim} cannot be split into {chunks} chunks")
    return sizes


def _check(name: str, x: jax.Array, y: jax.Array, mm_dim: int, shared: bool, rank: int = 1
           ) -> None:
    if mm_dim < 1 or rank < 1:
        raise ValueError(f"{name} mm_dim and rank must be >= 1, got {mm_dim} and {rank}")
    if shared and x.shape[-1] != y.shape[-1]:
        raise ValueError(f"{name} shared=True needs inputs of one size, got {x.shape[-1]} and "
                         f"{y.shape[-1]}")


def _normalize(z: jax.Array) -> jax.Array:
    return l2_normalize(signed_sqrt(z))


def _project(x, y, mm_dim, shared, dropout_input, deterministic, dtype):
    """x0, x1 = dropout_input(linear0(x)), dropout_input(linear1(y)) (linear1 is linear0 when
    shared; two independent dropout masks), in the accumulation dtype."""
    linear0 = torch_dense(mm_dim, x.shape[-1], dtype, "linear0")
    linear1 = linear0 if shared else torch_dense(mm_dim, y.shape[-1], dtype, "linear1")
    drop = nn.Dropout(dropout_input, deterministic=deterministic)
    return drop(linear0(x)), drop(linear1(y))


def _output(z, output_dim, dropout_pre_lin, dropout_output, deterministic, dtype):
    """dropout_output(linear_out(dropout_pre_lin(z))) in dtype."""
    z = nn.Dropout(dropout_pre_lin, deterministic=deterministic)(z)
    z = torch_dense(output_dim, z.shape[-1], dtype, "linear_out")(z)
    return nn.Dropout(dropout_output, deterministic=deterministic)(z).astype(dtype)


def _low_rank_core(x0, x1, rank, shared, dtype, names):
    """z_j = sum_{r<rank} p[..., r * d + j], p = merge0(x0) * merge1(x1), merge: d -> rank * d
    (merge1 is merge0 when shared): MUTAN's core, and BLOCK's on each block."""
    d = x0.shape[-1]
    merge0 = torch_dense(rank * d, d, dtype, names[0])
    merge1 = merge0 if shared else torch_dense(rank * d, d, dtype, names[1])
    p = merge0(x0) * merge1(x1)
    return jnp.sum(p.reshape(*p.shape[:-1], rank, d), axis=-2)


class Bilinear(nn.Module):
    """torch.nn.Bilinear: z_k = sum_ij a_i W_ijk b_j + c_k, W (p, q, features) float32 (torch
    stores it as (features, p, q)); W and c ~ U(+-1/sqrt(p)) as torch initialises them.

    a W runs as one GEMM in `dtype` with float32 accumulation; the contraction with b is an
    elementwise product and sum in float32 (float64 for a float64 `dtype`). Returns that.
    """

    features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, a: jax.Array, b: jax.Array) -> jax.Array:
        p, q = a.shape[-1], b.shape[-1]
        init = torch_linear_init(p)
        w = self.param("kernel", init, (p, q, self.features), jnp.float32)
        c = self.param("bias", init, (self.features,), jnp.float32)
        acc = accumulation_dtype(self.dtype)
        aw = lax.dot_general(a.astype(self.dtype), w.reshape(p, -1).astype(self.dtype),
                             (((a.ndim - 1,), (0,)), ((), ())), preferred_element_type=acc)
        aw = aw.reshape(*a.shape[:-1], q, self.features)
        return jnp.sum(b.astype(acc)[..., None] * aw, axis=-2) + c.astype(acc)


class Tucker(nn.Module):
    """Tucker fusion of x (..., m) and y (..., n) into (..., output_dim), in `dtype`.

    Parameters (float32, torch initialisation): linear0, linear1, bilinear, linear_out. GEMMs
    run in `dtype` with float32 accumulation, elementwise work in float32; dropout uses the
    "dropout" rng when `deterministic=False`. See the module docstring.
    """

    output_dim: int
    mm_dim: int = 1600
    normalize: bool = False
    dropout_input: float = 0.0
    dropout_pre_lin: float = 0.0
    dropout_output: float = 0.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array, *, deterministic: bool = True) -> jax.Array:
        _check("Tucker", x, y, self.mm_dim, False)
        x0, x1 = _project(x, y, self.mm_dim, False, self.dropout_input, deterministic,
                          self.dtype)
        z = Bilinear(self.mm_dim, self.dtype, name="bilinear")(x0, x1)
        if self.normalize:
            z = _normalize(z)
        return _output(z, self.output_dim, self.dropout_pre_lin, self.dropout_output,
                       deterministic, self.dtype)


class Mutan(nn.Module):
    """MUTAN fusion of x (..., m) and y (..., n) into (..., output_dim), in `dtype`.

    Parameters (float32, torch initialisation): linear0, linear1 (absent when shared),
    merge_linear0, merge_linear1 (absent when shared), linear_out. Compute and dropout as
    `Tucker`. See the module docstring.
    """

    output_dim: int
    mm_dim: int = 1600
    rank: int = 15
    shared: bool = False
    normalize: bool = False
    dropout_input: float = 0.0
    dropout_pre_lin: float = 0.0
    dropout_output: float = 0.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array, *, deterministic: bool = True) -> jax.Array:
        _check("Mutan", x, y, self.mm_dim, self.shared, self.rank)
        x0, x1 = _project(x, y, self.mm_dim, self.shared, self.dropout_input, deterministic,
                          self.dtype)
        z = _low_rank_core(x0, x1, self.rank, self.shared, self.dtype,
                           ("merge_linear0", "merge_linear1"))
        if self.normalize:
            z = _normalize(z)
        return _output(z, self.output_dim, self.dropout_pre_lin, self.dropout_output,
                       deterministic, self.dtype)


class Block(nn.Module):
    """BLOCK fusion of x (..., m) and y (..., n) into (..., output_dim), in `dtype`.

    Parameters (float32, torch initialisation): linear0, linear1 (absent when shared),
    merge_linears0_c and merge_linears1_c (absent when shared) for each non-empty block c,
    linear_out. Compute and dropout as `Tucker`. See the module docstring.
    """

    output_dim: int
    mm_dim: int = 1600
    chunks: int = 20
    rank: int = 15
    shared: bool = False
    dropout_input: float = 0.0
    dropout_pre_lin: float = 0.0
    dropout_output: float = 0.0
    pos_norm: str = "before_cat"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array, *, deterministic: bool = True) -> jax.Array:
        _check("Block", x, y, self.mm_dim, self.shared, self.rank)
        if self.pos_norm not in POS_NORMS:
            raise ValueError(f"Block pos_norm must be one of {POS_NORMS}, got {self.pos_norm!r}")
        sizes = chunk_sizes(self.mm_dim, self.chunks)
        x0, x1 = _project(x, y, self.mm_dim, self.shared, self.dropout_input, deterministic,
                          self.dtype)
        zs, start = [], 0
        for c, size in enumerate(sizes):
            if size == 0:  # the reference's empty last block: no parameters, no output
                continue
            z = _low_rank_core(x0[..., start:start + size], x1[..., start:start + size],
                               self.rank, self.shared, self.dtype,
                               (f"merge_linears0_{c}", f"merge_linears1_{c}"))
            zs.append(_normalize(z) if self.pos_norm == "before_cat" else z)
            start += size
        z = jnp.concatenate(zs, axis=-1)
        if self.pos_norm == "after_cat":
            z = _normalize(z)
        return _output(z, self.output_dim, self.dropout_pre_lin, self.dropout_output,
                       deterministic, self.dtype)
