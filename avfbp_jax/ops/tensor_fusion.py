"""Tensor fusion (TFN) and its low-rank form (LMF), for two inputs x (..., m) and y (..., n).

Both fuse the augmented vectors x1 = [1; x], y1 = [1; y] (the constant 1 first, as in the
authors' code), whose outer product holds x, y, their pairwise products and a 1:

    TFN (Zadeh et al., EMNLP 2017):
      h1 = relu(sum_ij x1_i y1_j W_ijk + b_k)       fused layer, W: (m+1, n+1, post_fusion_dim)
      h2 = relu(h1 W2 + b2)
      out = h2 W3 + b3                              (..., output_dim)
      dropout (post_fusion_dropout) acts on the flattened outer product x1 y1^T, training only.

    LMF (Liu et al., ACL 2018): W_ijk = sum_r w_r A_rik B_rjk, so
      out_k = sum_r w_r (x1 A_r)_k (y1 B_r)_k + bias_k
      A: (rank, m+1, output_dim), B: (rank, n+1, output_dim), w: (1, rank), bias: (1, output_dim)

Transcribed (in our words) from the authors' PyTorch code, the fusion parts only (the
modality subnetworks are the caller's):
  Justin1904/TensorFusionNetworks @ ef0e78b5583159de9b74ef2cdef6031bd9f94b37, model.py, TFN;
  Justin1904/Low-rank-Multimodal-Fusion @ ea4755124d19bddf7941695215e98f16fbb1fff9, model.py, LMF.
For two modalities x plays their audio (outer index), y their video. Left out, as specific to
their tasks: TFN's sigmoid(out) * 6 - 3 (fixed output_range/output_shift mapping one regression
output onto the CMU-MOSI sentiment range) and LMF's `use_softmax` (off in their IEMOCAP
training, whose cross-entropy takes the raw outputs); both heads here return raw outputs
(logits). LMF's reference builds a post_fusion_dropout but never applies it, so LMF has none.

Parameters load from the reference directly: TFN's post_fusion_layer_1.weight (k, (m+1)(n+1))
is our kernel (m+1, n+1, k) = weight.reshape(k, m+1, n+1) with its first axis moved last (the
flattening is row-major over (i, j)); layers 2 and 3 are Dense (kernel = weight.T). LMF's
audio_factor/video_factor/fusion_weights/fusion_bias are x_factor/y_factor/fusion_weights/
fusion_bias, same shapes (see tools/torch_twins/tensor_fusion.py).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from avfbp_jax.ops.bilinear_common import torch_linear_init

# Dense layers that accumulate in float32 whatever their compute dtype.
_DOT_F32 = functools.partial(lax.dot_general, preferred_element_type=jnp.float32)


def _with_one(v: jax.Array) -> jax.Array:
    """[1; v] along the last axis."""
    return jnp.concatenate([jnp.ones((*v.shape[:-1], 1), v.dtype), v], axis=-1)


def tensor_fusion(
    x: jax.Array,
    y: jax.Array,
    kernel: jax.Array,
    bias: jax.Array,
    *,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
) -> jax.Array:
    """TFN's fused layer sum_ij x1_i y1_j kernel_ijk + bias_k, float32 (..., k).

    Without dropout the outer product is never formed: one einsum of x1, y1 and the kernel,
    which jnp.einsum contracts pairwise (at our sizes the larger input first, leaving a
    (..., smaller + 1, k) intermediate instead of the (..., (m+1)(n+1)) product; measured
    faster than forming the product, e.g. 2.6x forward and backward on XLA:CPU at B = 256,
    m = 256, n = 128, k = 32).
    With dropout (applied only when `dropout_rng` is given and the rate is > 0) the mask,
    jax.random.bernoulli(dropout_rng, 1 - rate, (..., m+1, n+1)), is itself the outer
    product's size, so the masked product is formed and contracted. Contractions run in x's
    dtype with float32 accumulation.
    """
    if kernel.shape[:2] != (x.shape[-1] + 1, y.shape[-1] + 1):
        raise ValueError(f"tensor_fusion: kernel {kernel.shape} must be (m+1, n+1, k) for x "
                         f"{x.shape}, y {y.shape}")
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"tensor_fusion: dropout_rate must be in [0, 1), got {dropout_rate}")
    lead = jnp.broadcast_shapes(x.shape[:-1], y.shape[:-1])
    x1, y1, kernel = _with_one(x), _with_one(y.astype(x.dtype)), kernel.astype(x.dtype)
    if dropout_rng is None or dropout_rate == 0.0:
        z = jnp.einsum("...i,...j,ijk->...k", x1, y1, kernel,
                       preferred_element_type=jnp.float32)
    else:
        keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, (*lead, *kernel.shape[:2]))
        fused = jnp.where(keep, x1[..., :, None] * y1[..., None, :], 0)
        z = jnp.einsum("...ij,ijk->...k", fused, kernel,
                       preferred_element_type=jnp.float32) / (1.0 - dropout_rate)
    return z + bias.astype(jnp.float32)


class TensorFusion(nn.Module):
    """TFN's fused layer (`tensor_fusion`) owning its kernel (m+1, n+1, features) and bias,
    both torch.nn.Linear-initialised over fan_in (m+1)(n+1) like the reference's layer.

    Returns float32 (..., features); dropout on the fused tensor when not deterministic.
    """

    features: int
    dropout_rate: float = 0.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array, *, deterministic: bool = True) -> jax.Array:
        m1, n1 = x.shape[-1] + 1, y.shape[-1] + 1
        init = torch_linear_init(m1 * n1)
        kernel = self.param("kernel", init, (m1, n1, self.features), jnp.float32)
        bias = self.param("bias", init, (self.features,), jnp.float32)
        rng = None
        if not deterministic and self.dropout_rate > 0.0:
            rng = self.make_rng("dropout")
        return tensor_fusion(x.astype(self.dtype), y.astype(self.dtype), kernel, bias,
                             dropout_rate=self.dropout_rate, dropout_rng=rng)


def _torch_dense(features: int, fan_in: int, dtype: jnp.dtype, name: str) -> nn.Dense:
    """nn.Dense initialised as torch.nn.Linear, computing in dtype with float32 accumulation."""
    init = torch_linear_init(fan_in)
    return nn.Dense(features, dtype=dtype, kernel_init=init, bias_init=init,
                    dot_general=_DOT_F32, name=name)


class TFN(nn.Module):
    """Tensor Fusion Network's fusion part: TensorFusion -> ReLU -> Dense -> ReLU -> Dense.

    Attributes:
      output_dim: size of the output (raw; the reference's sigmoid * 6 - 3 is left out).
      post_fusion_dim: width of the post-fusion layers (reference training: 32).
      post_fusion_dropout: dropout on the fused tensor (reference training: 0.3).
      dtype: compute dtype (parameters stay float32, accumulation is float32).
    """

    output_dim: int
    post_fusion_dim: int = 32
    post_fusion_dropout: float = 0.3
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array, *, deterministic: bool = True) -> jax.Array:
        k = self.post_fusion_dim
        h = TensorFusion(k, self.post_fusion_dropout, self.dtype, name="post_fusion_layer_1")(
            x, y, deterministic=deterministic)
        h = nn.relu(h)
        h = nn.relu(_torch_dense(k, k, self.dtype, "post_fusion_layer_2")(h))
        out = _torch_dense(self.output_dim, k, self.dtype, "post_fusion_layer_3")(h)
        return out.astype(self.dtype)


# torch.nn.init.xavier_normal_: N(0, 2 / (fan_in + fan_out)) with torch's fans, fan_in =
# shape[1] * receptive field, fan_out = shape[0] * receptive field (the trailing axes).
_XAVIER_NORMAL = nn.initializers.variance_scaling(1.0, "fan_avg", "normal", in_axis=1,
                                                   out_axis=0)


class LMF(nn.Module):
    """Low-rank Multimodal Fusion: sum_r w_r (x1 A_r) * (y1 B_r) + bias (see module doc).

    Factors and fusion_weights are xavier_normal-initialised with torch's fans, fusion_bias
    zeros, as in the reference.

    Attributes:
      output_dim: size of the output.
      rank: number of rank-one terms (the reference searches 1, 4, 8, 16; 4 is the rank of
        most of its tuned settings, hyperparams.txt).
      dtype: compute dtype of the factor projections (float32 accumulation; the product and
        the weighted sum over the rank run in float32).
    """

    output_dim: int
    rank: int = 4
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array, *, deterministic: bool = True) -> jax.Array:
        del deterministic  # the reference applies no dropout in LMF (see module doc)
        r, o = self.rank, self.output_dim
        x_factor = self.param("x_factor", _XAVIER_NORMAL, (r, x.shape[-1] + 1, o), jnp.float32)
        y_factor = self.param("y_factor", _XAVIER_NORMAL, (r, y.shape[-1] + 1, o), jnp.float32)
        weights = self.param("fusion_weights", _XAVIER_NORMAL, (1, r), jnp.float32)
        bias = self.param("fusion_bias", nn.initializers.zeros, (1, o), jnp.float32)
        fx = jnp.einsum("...i,rik->...rk", _with_one(x.astype(self.dtype)),
                        x_factor.astype(self.dtype), preferred_element_type=jnp.float32)
        fy = jnp.einsum("...j,rjk->...rk", _with_one(y.astype(self.dtype)),
                        y_factor.astype(self.dtype), preferred_element_type=jnp.float32)
        out = jnp.einsum("...rk,r->...k", fx * fy, weights[0]) + bias[0]
        return out.astype(self.dtype)
