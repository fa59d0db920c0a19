"""MLB: multimodal low-rank bilinear pooling (Kim et al., "Hadamard Product for Low-rank
Bilinear Pooling", ICLR 2017), as block.bootstrap.pytorch defines it (Cadene et al.,
block/models/networks/fusions/fusions.py, class MLB, commit e938e9e).

For x in R^m and y in R^n:

    x0 = act_in(W_0 x + b_0),  x1 = act_in(W_1 y + b_1)      W_0, W_1: -> mm_dim
    z = dropout_input(x0) * dropout_input(x1)                 two independent masks
    z = z / max(||z||, eps) after z = sign(z) sqrt(|z|)        only if normalize
    out = dropout_output(act_out(W_o dropout_pre_lin(z) + b_o))

Quirks kept from the reference: both activations default to relu (the paper uses tanh), so
with the defaults the output is non-negative (pass activ_output=None for logits); the output
activation comes after linear_out and before dropout_output.
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


class MLB(nn.Module):
    """MLB fusion of x (..., m) and y (..., n) into (..., output_dim), in `dtype`.

    Parameters (float32, torch.nn.Linear's initialisation): linear0, linear1, linear_out. GEMMs
    run in `dtype` with float32 accumulation; the elementwise work runs in float32. Dropout uses
    the "dropout" rng when `deterministic=False`.
    """

    output_dim: int
    mm_dim: int = 1200
    activ_input: str | None = "relu"
    activ_output: str | None = "relu"
    normalize: bool = False
    dropout_input: float = 0.0
    dropout_pre_lin: float = 0.0
    dropout_output: float = 0.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array, *, deterministic: bool = True) -> jax.Array:
        act_in = torch_activation("MLB activ_input", self.activ_input)
        act_out = torch_activation("MLB activ_output", self.activ_output)
        x0 = act_in(torch_dense(self.mm_dim, x.shape[-1], self.dtype, "linear0")(x))
        x1 = act_in(torch_dense(self.mm_dim, y.shape[-1], self.dtype, "linear1")(y))
        drop_input = nn.Dropout(self.dropout_input, deterministic=deterministic)
        z = drop_input(x0) * drop_input(x1)
        if self.normalize:
            z = l2_normalize(signed_sqrt(z))
        z = nn.Dropout(self.dropout_pre_lin, deterministic=deterministic)(z)
        z = act_out(torch_dense(self.output_dim, self.mm_dim, self.dtype, "linear_out")(z))
        z = nn.Dropout(self.dropout_output, deterministic=deterministic)(z)
        return z.astype(self.dtype)
