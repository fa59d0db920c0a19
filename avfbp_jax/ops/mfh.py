"""MFH: multi-modal factorized high-order pooling (Yu et al., "Beyond Bilinear: Generalized
Multimodal Factorized High-order Pooling for Visual Question Answering", TNNLS 2018), as
block.bootstrap.pytorch defines it (Cadene/block.bootstrap.pytorch, commit e938e9e,
block/models/networks/fusions/fusions.py, class MFH).

Two MFB stages i = 0, 1 (each with its own projections), the second multiplied by the first's
product before pooling (the "higher-order" stacking):

    a_i = drop_in(act_in(x W_x^i + b_x^i))    b_i = drop_in(act_in(y W_y^i + b_y^i))
    p_0 = drop_pre(a_0 * b_0)                 p_1 = drop_pre(a_1 * b_1 * p_0)
    z_i = sum_pool(p_i, factor)               sum over `factor` ADJACENT entries (ops.fbp)
    z_i = l2_normalize(signed_sqrt(z_i))      only if `normalize`
    out = drop_out(act_out([z_0, z_1] W_o + b_o))

W_x^i: (m, mm_dim*factor); W_o: (2*mm_dim, output_dim). Dropout, activations and their order
are the reference's.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from avfbp_jax.ops.bilinear_common import (
    l2_normalize,
    signed_sqrt,
    torch_activation,
    torch_dense,
)
from avfbp_jax.ops.fbp import sum_pool


class MFH(nn.Module):
    """MFH fusion of x (..., m) and y (..., n) into (..., output_dim), block.bootstrap's MFH.

    Defaults are the reference's: mm_dim 1200, factor 2, relu on the projections and on the
    output, no normalisation, no dropout. Parameter names follow the reference's layers
    (linear0_0, linear1_0, linear0_1, linear1_1, linear_out), each initialised like
    torch.nn.Linear. What the reference does that one might not expect, kept here:
      - the stage-1 product p_0 enters stage 2 after its dropout (the same mask) and before
        pooling and normalisation; stage 2's product is dropped out again;
      - each stage draws its own input dropout masks;
      - normalisation (signed square root then L2 over the last axis) is off by default, and
        the output goes through relu by default.
    Differences: any leading shape (the reference's view() needs (B, features)); the signed
    square root's derivative at exactly 0 is floored (`signed_sqrt`) where torch's
    sqrt(relu(z)) - sqrt(relu(-z)) gives 0. With relu projections, the only gradients that
    this changes are multiplied by an exact 0 further back, so no parameter or input gradient
    differs.

    GEMMs run in `dtype` with float32 accumulation; the elementwise work runs in float32;
    parameters are float32. Dropout uses the "dropout" rng when `deterministic` is False.
    """

    output_dim: int
    mm_dim: int = 1200
    factor: int = 2
    activ_input: str | None = "relu"
    activ_output: str | None = "relu"
    normalize: bool = False
    dropout_input: float = 0.0
    dropout_pre_lin: float = 0.0
    dropout_output: float = 0.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array, *, deterministic: bool = True) -> jax.Array:
        if min(self.output_dim, self.mm_dim, self.factor) < 1:
            raise ValueError(f"MFH: output_dim, mm_dim and factor must be >= 1, got "
                             f"{self.output_dim}, {self.mm_dim}, {self.factor}")
        act_in = torch_activation("MFH activ_input", self.activ_input)
        act_out = torch_activation("MFH activ_output", self.activ_output)
        x, y = x.astype(self.dtype), y.astype(self.dtype)
        width = self.mm_dim * self.factor

        def product(stage: int) -> jax.Array:
            """a_i * b_i of stage i (float32), after activation and input dropout."""
            a = act_in(torch_dense(width, x.shape[-1], self.dtype, f"linear0_{stage}")(x))
            b = act_in(torch_dense(width, y.shape[-1], self.dtype, f"linear1_{stage}")(y))
            drop = lambda v: nn.Dropout(self.dropout_input)(v, deterministic=deterministic)
            return drop(a) * drop(b)

        def pool(p: jax.Array) -> jax.Array:
            z = sum_pool(p, self.factor)
            return l2_normalize(signed_sqrt(z)) if self.normalize else z

        drop_pre = lambda v: nn.Dropout(self.dropout_pre_lin)(v, deterministic=deterministic)
        p_0 = drop_pre(product(0))
        z_0 = pool(p_0)
        z_1 = pool(drop_pre(product(1) * p_0))
        z = jnp.concatenate([z_0, z_1], axis=-1).astype(self.dtype)
        out = act_out(torch_dense(self.output_dim, 2 * self.mm_dim, self.dtype, "linear_out")(z))
        out = nn.Dropout(self.dropout_output)(out, deterministic=deterministic)
        return out.astype(self.dtype)
