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
    """(rows, k) @ (k, cols) with float32 accumulation: per-call data times a weight, in the
    layout a GEMM reads in place (whatever layout the member keeps its weight in)."""

    rows: int
    k: int
    cols: int

    def __call__(self, a: jax.Array, w: jax.Array) -> jax.Array:
        return jnp.dot(a, w, preferred_element_type=jnp.float32)

    def flops(self, mode: str) -> float:
        """2 per multiply-add; 3x forward+backward (an input and a weight gradient of the
        same size)."""
        return 2.0 * self.rows * self.k * self.cols * (1 if mode == "fwd" else 3)

    def operands(self, dtype: Any) -> list[tuple[tuple[int, ...], Any, bool]]:
        """(shape, dtype, per-call) of each operand."""
        return [((self.rows, self.k), dtype, True), ((self.k, self.cols), dtype, False)]


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


def fbp_floor(b: int, m: int, n: int, s: dict[str, Any]) -> list[FloorOp]:
    """x W_x, y W_y (k o columns each)."""
    ko = s["k"] * s["o"]
    return [Gemm(b, m, ko), Gemm(b, n, ko)]


def mfh_floor(b: int, m: int, n: int, s: dict[str, Any]) -> list[FloorOp]:
    """Two stages of x W_x^i, y W_y^i (mm_dim factor columns), then linear_out."""
    width = s["mm_dim"] * s["factor"]
    stage = [Gemm(b, m, width), Gemm(b, n, width)]
    return [*stage, *stage, Gemm(b, 2 * s["mm_dim"], s["output_dim"])]


def mcb_floor(b: int, m: int, n: int, s: dict[str, Any]) -> list[FloorOp]:
    """The sketches' FFT convolution, then linear_out (the count sketches are scatters)."""
    return [FFTConv(b, s["mm_dim"]), Gemm(b, s["mm_dim"], s["output_dim"])]


def mlb_floor(b: int, m: int, n: int, s: dict[str, Any]) -> list[FloorOp]:
    """linear0, linear1 (mm_dim columns each), linear_out."""
    return [Gemm(b, m, s["mm_dim"]), Gemm(b, n, s["mm_dim"]),
            Gemm(b, s["mm_dim"], s["output_dim"])]


def mutan_floor(b: int, m: int, n: int, s: dict[str, Any]) -> list[FloorOp]:
    """linear0, linear1, the two merge layers (rank mm_dim columns each; one when shared),
    linear_out."""
    d = s["mm_dim"]
    merges = [Gemm(b, d, s["rank"] * d)] * (1 if s["shared"] else 2)
    return [Gemm(b, m, d), Gemm(b, n, d), *merges, Gemm(b, d, s["output_dim"])]


def tucker_floor(b: int, m: int, n: int, s: dict[str, Any]) -> list[FloorOp]:
    """linear0, linear1, the full core contracted with x0 (one GEMM; the contraction of its
    (b, mm_dim, mm_dim) result with x1 is a product and sum per row, elementwise work),
    linear_out."""
    d = s["mm_dim"]
    return [Gemm(b, m, d), Gemm(b, n, d), Gemm(b, d, d * d), Gemm(b, d, s["output_dim"])]


def block_floor(b: int, m: int, n: int, s: dict[str, Any]) -> list[FloorOp]:
    """linear0, linear1, each block's two merge layers (size -> rank size columns; one when
    shared), linear_out."""
    d, r = s["mm_dim"], s["rank"]
    merges = [Gemm(b, c, r * c) for c in chunk_sizes(d, s["chunks"]) if c]
    return [Gemm(b, m, d), Gemm(b, n, d), *merges * (1 if s["shared"] else 2),
            Gemm(b, d, s["output_dim"])]


def tfn_floor(b: int, m: int, n: int, s: dict[str, Any]) -> list[FloorOp]:
    """The fused layer's kernel contracted with the larger augmented input (one GEMM; the
    contraction of its (b, smaller + 1, k) result with the other input is a product and sum
    per row), then the two post-fusion layers."""
    big, small, k = max(m, n) + 1, min(m, n) + 1, s["post_fusion_dim"]
    return [Gemm(b, big, small * k), Gemm(b, k, k), Gemm(b, k, s["output_dim"])]


def lmf_floor(b: int, m: int, n: int, s: dict[str, Any]) -> list[FloorOp]:
    """The two factor projections of the augmented inputs, rank x output_dim columns each."""
    r, o = s["rank"], s["output_dim"]
    return [Gemm(b, m + 1, r * o), Gemm(b, n + 1, r * o)]


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
