"""Array-level building blocks: factorized bilinear pooling and the rest of the bilinear fusion
family, LRN, masked pooling."""

from avfbp_jax.ops.bilinear_common import l2_normalize, signed_sqrt
from avfbp_jax.ops.fbp import FBP, fbp, sum_pool
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
from avfbp_jax.ops.mcb import MCB, compact_bilinear, count_sketch
from avfbp_jax.ops.mfh import MFH
from avfbp_jax.ops.mlb import MLB
from avfbp_jax.ops.tensor_fusion import LMF, TFN, tensor_fusion
from avfbp_jax.ops.tucker import Block, Mutan, Tucker

__all__ = [
    "Block",
    "LMF",
    "MCB",
    "MFH",
    "MLB",
    "Mutan",
    "TFN",
    "Tucker",
    "compact_bilinear",
    "count_sketch",
    "sum_pool",
    "tensor_fusion",
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
