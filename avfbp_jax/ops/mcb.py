"""MCB: multimodal compact bilinear pooling (Fukui et al., "Multimodal Compact Bilinear Pooling
for Visual Question Answering and Visual Grounding", EMNLP 2016; Gao et al., "Compact Bilinear
Pooling", CVPR 2016), as block.bootstrap.pytorch defines it (Cadene/block.bootstrap.pytorch,
commit e938e9e, block/models/networks/fusions/fusions.py class MCB and
compactbilinearpooling.py).

A count sketch Psi(v; h, s)_j = sum_{i: h_i = j} s_i v_i (h_i uniform in [0, d), s_i = +-1,
drawn once) maps x and y to d = mm_dim entries; the circular convolution of the two sketches is
the count sketch of the outer product x y^T (hash (h_x[i] + h_y[j]) mod d, sign s_x[i] s_y[j]):

    z = irfft(rfft(Psi(x; h_x, s_x)) * rfft(Psi(y; h_y, s_y)), d)
    out = drop_out(act_out(z W_o + b_o))                W_o: (mm_dim, output_dim)
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from avfbp_jax.ops.bilinear_common import torch_activation, torch_dense

# h is stored as float32 (see MCB); float32 holds every integer below 2**24 exactly.
_MAX_SKETCH_SIZE = 2**24


def count_sketch(v: jax.Array, h: jax.Array, s: jax.Array, d: int) -> jax.Array:
    """Psi(v)_j = sum_{i: h_i = j} s_i v_i over the last axis of v (..., m): float32 (..., d).

    h: int (m,) in [0, d); s: (m,) of +-1. Its gradient in v is the gather s_i g[h_i].
    """
    vs = v.astype(jnp.float32) * s.astype(jnp.float32)
    return jnp.zeros((*v.shape[:-1], d), jnp.float32).at[..., h].add(vs)


def compact_bilinear(x: jax.Array, y: jax.Array, h_x: jax.Array, s_x: jax.Array,
                     h_y: jax.Array, s_y: jax.Array, d: int) -> jax.Array:
    """Circular convolution of the count sketches of x (..., m) and y (..., n), by FFT in
    float32/complex64: float32 (..., d)."""
    f_x = jnp.fft.rfft(count_sketch(x, h_x, s_x, d), axis=-1)
    f_y = jnp.fft.rfft(count_sketch(y, h_y, s_y, d), axis=-1)
    return jnp.fft.irfft(f_x * f_y, n=d, axis=-1)


def _sketch_init(d: int):
    """Init of one count sketch's {"h", "s"} for an input of `size` features: h uniform
    integers in [0, d) (as float32), s uniform +-1 (float32)."""

    def init(key: jax.Array, size: int) -> dict:
        key_h, key_s = jax.random.split(key)
        h = jax.random.randint(key_h, (size,), 0, d, jnp.int32).astype(jnp.float32)
        return {"h": h, "s": jax.random.rademacher(key_s, (size,), jnp.float32)}

    return init


class MCB(nn.Module):
    """MCB fusion of x (..., m) and y (..., n) into (..., output_dim), block.bootstrap's MCB.

    Defaults are the reference's: mm_dim 16000, relu on the output, no dropout. As there, the
    compact bilinear vector goes straight into linear_out: no signed square root and no L2
    normalisation (which Fukui et al. apply), no input activation or dropout.

    The hashes are parameters "sketch_x" and "sketch_y" ({"h", "s"}, float32, drawn from the
    "params" rng at init), so they are saved and restored with the model like the reference's
    buffers; the forward pass applies stop_gradient to them, so their gradients are exactly 0.
    h is stored as float32 (exact integers) because the train step differentiates the whole
    params tree and jax.grad rejects integer leaves. THE OPTIMIZER MUST FREEZE sketch_x and
    sketch_y: any update (e.g. weight decay) would change the hash. linear_out is initialised
    like torch.nn.Linear.

    The linear layer runs in `dtype` with float32 accumulation; sketches and FFTs run in
    float32/complex64; parameters are float32. Dropout uses the "dropout" rng when
    `deterministic` is False.
    """

    output_dim: int
    mm_dim: int = 16000
    activ_output: str | None = "relu"
    dropout_output: float = 0.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array, *, deterministic: bool = True) -> jax.Array:
        if self.output_dim < 1 or not 1 <= self.mm_dim <= _MAX_SKETCH_SIZE:
            raise ValueError(f"MCB: output_dim must be >= 1 and mm_dim in [1, {_MAX_SKETCH_SIZE}], "
                             f"got {self.output_dim}, {self.mm_dim}")
        act_out = torch_activation("MCB activ_output", self.activ_output)
        sketch_x = self.param("sketch_x", _sketch_init(self.mm_dim), x.shape[-1])
        sketch_y = self.param("sketch_y", _sketch_init(self.mm_dim), y.shape[-1])
        sketch_x, sketch_y = jax.lax.stop_gradient((sketch_x, sketch_y))
        z = compact_bilinear(x.astype(self.dtype), y.astype(self.dtype),
                             sketch_x["h"].astype(jnp.int32), sketch_x["s"],
                             sketch_y["h"].astype(jnp.int32), sketch_y["s"], self.mm_dim)
        linear_out = torch_dense(self.output_dim, self.mm_dim, self.dtype, "linear_out")
        out = act_out(linear_out(z.astype(self.dtype)))
        out = nn.Dropout(self.dropout_output)(out, deterministic=deterministic)
        return out.astype(self.dtype)
