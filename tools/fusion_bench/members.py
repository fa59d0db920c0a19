"""The members of the bilinear fusion family the benchmark times, and what each is measured
against: its floor, the unavoidable GEMMs (and FFTs) alone at the member's shapes, and its
PyTorch reference transcription (tools/fusion_bench/twins.py).

A member is one entry of MEMBERS: its floor ops and its twin. Our side is the model's own module,
built by avfbp_jax.models.fusion.fusion_op from a model config, so the benchmark times exactly
what the model runs with the settings the model uses (`settings`). The reference sizes are in
tools/fusion_bench/__init__.py.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from avfbp_jax.ops.tucker import chunk_sizes
from tools.fusion_bench import twins


@dataclasses.dataclass(frozen=True)
class Gemm:
    """einsum(spec, a, b) with float32 accumulation: a is per-call data, b a weight."""

    spec: str
    a: tuple[int, ...]
    b: tuple[int, ...]

    def __call__(self, a: jax.Array, b: jax.Array) -> jax.Array:
        return jnp.einsum(self.spec, a, b, preferred_element_type=jnp.float32)

    def flops(self, mode: str) -> float:
        """2 per multiply-add, 2 x the product of every index's size; 3x forward+backward (an
        input and a weight gradient of the same size)."""
        lhs, rhs = self.spec.split("->")[0].split(",")
        sizes = dict(zip(lhs, self.a, strict=True)) | dict(zip(rhs, self.b, strict=True))
        return 2.0 * math.prod(sizes.values()) * (1 if mode == "fwd" else 3)

    def operands(self, dtype: Any) -> list[tuple[tuple[int, ...], Any, bool]]:
        """(shape, dtype, per-call) of each operand."""
        return [(self.a, dtype, True), (self.b, dtype, False)]


@dataclasses.dataclass(frozen=True)
class FFTConv:
    """irfft(rfft(a) * rfft(b), d) over the last axis of float32 (rows, d) arrays: MCB's
    circular convolution of the two count sketches."""

    rows: int
    d: int

    def __call__(self, a: jax.Array, b: jax.Array) -> jax.Array:
        return jnp.fft.irfft(jnp.fft.rfft(a) * jnp.fft.rfft(b), n=self.d)

    def flops(self, mode: str) -> float:
        """Three real FFTs of 2.5 d log2 d FLOPs and the complex product, per row; 2x
        forward+backward (the gradient takes three more transforms)."""
        fwd = self.rows * (3 * 2.5 * self.d * math.log2(self.d) + 6 * (self.d // 2 + 1))
        return fwd * (1 if mode == "fwd" else 2)

    def operands(self, dtype: Any) -> list[tuple[tuple[int, ...], Any, bool]]:
        del dtype  # the sketches and FFTs are float32 in every compute dtype, as in ops.mcb
        return [((self.rows, self.d), jnp.float32, True)] * 2


FloorOp = Gemm | FFTConv


def dense(b: int, fan_in: int, fan_out: int) -> Gemm:
    """A linear layer's GEMM, (b, fan_in) @ (fan_in, fan_out)."""
    return Gemm("bi,ij->bj", (b, fan_in), (fan_in, fan_out))


def fbp_floor(b: int, m: int, n: int, s: dict[str, Any]) -> list[FloorOp]:
    """x W_x, y W_y (k o columns each)."""
    ko = s["k"] * s["o"]
    return [dense(b, m, ko), dense(b, n, ko)]


def mfh_floor(b: int, m: int, n: int, s: dict[str, Any]) -> list[FloorOp]:
    """Two stages of x W_x^i, y W_y^i (mm_dim factor columns), then linear_out."""
    width = s["mm_dim"] * s["factor"]
    stage = [dense(b, m, width), dense(b, n, width)]
    return [*stage, *stage, dense(b, 2 * s["mm_dim"], s["output_dim"])]


def mcb_floor(b: int, m: int, n: int, s: dict[str, Any]) -> list[FloorOp]:
    """The sketches' FFT convolution, then linear_out (the count sketches are scatters)."""
    return [FFTConv(b, s["mm_dim"]), dense(b, s["mm_dim"], s["output_dim"])]


def mlb_floor(b: int, m: int, n: int, s: dict[str, Any]) -> list[FloorOp]:
    """linear0, linear1 (mm_dim columns each), linear_out."""
    return [dense(b, m, s["mm_dim"]), dense(b, n, s["mm_dim"]),
            dense(b, s["mm_dim"], s["output_dim"])]


def mutan_floor(b: int, m: int, n: int, s: dict[str, Any]) -> list[FloorOp]:
    """linear0, linear1, the two merge layers (rank mm_dim columns each; one when shared),
    linear_out."""
    d = s["mm_dim"]
    merges = [dense(b, d, s["rank"] * d)] * (1 if s["shared"] else 2)
    return [dense(b, m, d), dense(b, n, d), *merges, dense(b, d, s["output_dim"])]


def tucker_floor(b: int, m: int, n: int, s: dict[str, Any]) -> list[FloorOp]:
    """linear0, linear1, the full core contracted with x0 (one GEMM; the contraction of its
    (b, mm_dim, mm_dim) result with x1 is a product and sum per row, elementwise work),
    linear_out."""
    d = s["mm_dim"]
    return [dense(b, m, d), dense(b, n, d), Gemm("bi,ijk->bjk", (b, d), (d, d, d)),
            dense(b, d, s["output_dim"])]


def block_floor(b: int, m: int, n: int, s: dict[str, Any]) -> list[FloorOp]:
    """linear0, linear1, each block's two merge layers (size -> rank size columns; one when
    shared), linear_out."""
    d, r = s["mm_dim"], s["rank"]
    merges = [dense(b, c, r * c) for c in chunk_sizes(d, s["chunks"]) if c]
    return [dense(b, m, d), dense(b, n, d), *merges * (1 if s["shared"] else 2),
            dense(b, d, s["output_dim"])]


def tfn_floor(b: int, m: int, n: int, s: dict[str, Any]) -> list[FloorOp]:
    """The fused layer's kernel contracted with the larger augmented input (one GEMM; the
    contraction of its (b, smaller + 1, k) result with the other input is a product and sum
    per row), then the two post-fusion layers."""
    big, small, k = max(m, n) + 1, min(m, n) + 1, s["post_fusion_dim"]
    return [Gemm("bi,ijk->bjk", (b, big), (big, small, k)), dense(b, k, k),
            dense(b, k, s["output_dim"])]


def lmf_floor(b: int, m: int, n: int, s: dict[str, Any]) -> list[FloorOp]:
    """The two factor projections of the augmented inputs, each one GEMM of rank x
    output_dim columns (in the (in, out) layout a GEMM reads in place)."""
    r, o = s["rank"], s["output_dim"]
    return [dense(b, m + 1, r * o), dense(b, n + 1, r * o)]


@dataclasses.dataclass(frozen=True)
class Member:
    """floor(batch, m, n, settings): the floor's ops; twin: builds the PyTorch twin
    (tools/fusion_bench/twins.py)."""

    floor: Callable[[int, int, int, dict[str, Any]], list[FloorOp]]
    twin: Callable[..., twins.Twin]


# The family, by FUSION_OPS name. Adding a member is one entry.
MEMBERS: dict[str, Member] = {
    "fbp": Member(fbp_floor, twins.fbp),
    "mfh": Member(mfh_floor, twins.block_style("mfh_mcb", "TorchMFH")),
    "mlb": Member(mlb_floor, twins.block_style("block_fusions", "MLB")),
    "mutan": Member(mutan_floor, twins.block_style("block_fusions", "Mutan")),
    "tucker": Member(tucker_floor, twins.block_style("block_fusions", "Tucker")),
    "block": Member(block_floor, twins.block_style("block_fusions", "Block")),
    "mcb": Member(mcb_floor, twins.block_style("mfh_mcb", "TorchMCB", float_inputs=True)),
    "tfn": Member(tfn_floor, twins.tensor_style(lambda tf, s, m, n: tf.TFNFusion(
        m, n, s["post_fusion_dim"], s["output_dim"], s["post_fusion_dropout"]))),
    "lmf": Member(lmf_floor, twins.tensor_style(lambda tf, s, m, n: tf.LMFFusion(
        m, n, s["output_dim"], s["rank"]))),
}


def settings(cfg: ml_collections.ConfigDict, name: str) -> dict[str, Any]:
    """The member's settings in a model config: FBP's k and o, the others' fusion_ops group."""
    if name == "fbp":
        return {"k": cfg.fbp_k, "o": cfg.fbp_o}
    return cfg.fusion_ops[name].to_dict()
