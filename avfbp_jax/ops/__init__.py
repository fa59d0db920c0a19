"""Array-level building blocks: factorized bilinear pooling, LRN, masked pooling."""

from avfbp_jax.ops.bilinear_common import l2_normalize, signed_sqrt
from avfbp_jax.ops.fbp import FBP, fbp
from avfbp_jax.ops.fbp_mosaic import fbp_mosaic
from avfbp_jax.ops.fbp_pallas import dropout_keep_mask, dropout_seed, fbp_pallas
from avfbp_jax.ops.lrn import local_response_norm
from avfbp_jax.ops.masking import (
    AttendedSequence,
    attention_pool,
    attention_weights,
    conv_output_length,
    length_mask,
    masked_mean,
    masked_normalize,
    masked_softmax,
    trunk_masks,
    zero_invalid,
)

__all__ = [
    "AttendedSequence",
    "attention_pool",
    "attention_weights",
    "FBP",
    "conv_output_length",
    "dropout_keep_mask",
    "dropout_seed",
    "fbp",
    "fbp_mosaic",
    "fbp_pallas",
    "l2_normalize",
    "length_mask",
    "local_response_norm",
    "masked_mean",
    "masked_normalize",
    "masked_softmax",
    "signed_sqrt",
    "trunk_masks",
    "zero_invalid",
]
