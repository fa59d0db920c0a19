"""Flax ports of MTCNN's three networks (P-, R- and O-Net) and their converted weights.

MTCNN (Zhang et al. 2016, "Joint Face Detection and Alignment using Multi-task Cascaded
Convolutional Networks") is a cascade of three small CNNs; `avfbp_jax.data.mtcnn` runs the
detection pipeline around them. The weights are the Caffe-trained ones of the paper's release as
converted by facenet (det1/2/3) and shipped, MIT-licensed, in the `mtcnn` 0.1.1 wheel;
`python3 -m avfbp_jax.commands.mtcnn_convert` turns them into an Orbax checkpoint.

The Caffe nets were trained on transposed images (MATLAB's column-major order puts x first), so
the original pipeline transposes every image before its nets. The converter transposes the
convolution kernels and reorders the rows of the dense layer after the flatten instead, so these
modules take images in the natural [N, H, W, 3] layout and give the same numbers.

Inputs are normalised pixels, `normalize(rgb_uint8)` = (x - 127.5) * 0.0078125, as the original.

  PNet  conv3 10, PReLU, maxpool 2/2 same, conv3 16, PReLU, conv3 32, PReLU,
        1x1 convs -> face probability [N, H', W', 2] and box offsets [N, H', W', 4]
        (fully convolutional: one output cell per 12x12 window, stride 2)
  RNet  24x24: conv3 28, PReLU, maxpool 3/2 same, conv3 48, PReLU, maxpool 3/2 valid,
        conv2 64, PReLU, flatten, dense 128, PReLU -> probs [N, 2], box [N, 4]
  ONet  48x48: conv3 32, PReLU, maxpool 3/2 same, conv3 64, PReLU, maxpool 3/2 valid,
        conv3 64, PReLU, maxpool 2/2 same, conv2 128, PReLU, flatten, dense 256, PReLU
        -> probs [N, 2], box [N, 4], landmarks [N, 10] (five x, then five y)
"""

import os
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from avfbp_jax import trees, weights

WEIGHTS_ENV = "AVFBP_MTCNN_WEIGHTS"
META_FILE = "mtcnn.json"
CONVERT_COMMAND = "python3 -m avfbp_jax.commands.mtcnn_convert"
NETS = ("pnet", "rnet", "onet")
CROP_SIZES = {"rnet": 24, "onet": 48}

_HIGHEST = jax.lax.Precision.HIGHEST  # detection thresholds should not drift with TF32 passes


def normalize(pixels: np.ndarray) -> np.ndarray:
    """Pixel values (uint8 or float) -> float32 network input, (x - 127.5) * 0.0078125."""
    return (np.asarray(pixels, np.float32) - 127.5) * 0.0078125


class PReLU(nn.Module):
    """max(x, 0) + alpha * min(x, 0), one alpha per channel (Keras PReLU, shared spatial axes)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        alpha = self.param("alpha", nn.initializers.constant(0.25), (x.shape[-1],))
        return jnp.maximum(x, 0.0) + alpha * jnp.minimum(x, 0.0)


def _conv(features: int, kernel: int, name: str) -> nn.Conv:
    return nn.Conv(features, (kernel, kernel), padding="VALID", precision=_HIGHEST, name=name)


def _dense(features: int, name: str) -> nn.Dense:
    return nn.Dense(features, precision=_HIGHEST, name=name)


def _conv_prelu(x: jax.Array, features: int, kernel: int, i: int) -> jax.Array:
    return PReLU(name=f"prelu{i}")(_conv(features, kernel, f"conv{i}")(x))


class PNet(nn.Module):
    """Proposal net: [N, H, W, 3] -> {"probs": [N, H', W', 2], "box": [N, H', W', 4]}."""

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        x = _conv_prelu(x, 10, 3, 1)
        x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
        x = _conv_prelu(x, 16, 3, 2)
        x = _conv_prelu(x, 32, 3, 3)
        return {"probs": nn.softmax(_conv(2, 1, "score")(x)), "box": _conv(4, 1, "box")(x)}


class RNet(nn.Module):
    """Refinement net: [N, 24, 24, 3] -> {"probs": [N, 2], "box": [N, 4]}."""

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        x = _conv_prelu(x, 28, 3, 1)
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        x = _conv_prelu(x, 48, 3, 2)
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")
        x = _conv_prelu(x, 64, 2, 3)
        x = PReLU(name="prelu4")(_dense(128, "fc")(x.reshape(x.shape[0], -1)))
        return {"probs": nn.softmax(_dense(2, "score")(x)), "box": _dense(4, "box")(x)}


class ONet(nn.Module):
    """Output net: [N, 48, 48, 3] -> {"probs": [N, 2], "box": [N, 4], "landmarks": [N, 10]}."""

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        x = _conv_prelu(x, 32, 3, 1)
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        x = _conv_prelu(x, 64, 3, 2)
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")
        x = _conv_prelu(x, 64, 3, 3)
        x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
        x = _conv_prelu(x, 128, 2, 4)
        x = PReLU(name="prelu5")(_dense(256, "fc")(x.reshape(x.shape[0], -1)))
        return {"probs": nn.softmax(_dense(2, "score")(x)), "box": _dense(4, "box")(x),
                "landmarks": _dense(10, "landmarks")(x)}


MODULES = {"pnet": PNet(), "rnet": RNet(), "onet": ONet()}


def param_shapes() -> dict:
    """{"pnet", "rnet", "onet"} -> the net's parameter tree as jax.ShapeDtypeStruct leaves."""
    sizes = {"pnet": 12, **CROP_SIZES}
    return {name: jax.eval_shape(module.init, jax.random.key(0),
                                 jnp.zeros((1, sizes[name], sizes[name], 3)))["params"]
            for name, module in MODULES.items()}


def default_weights_dir() -> Path:
    """$AVFBP_MTCNN_WEIGHTS if set, else avfbp-jax/mtcnn in the user's cache folder."""
    return weights.default_dir("mtcnn", WEIGHTS_ENV)


def load_params(path: str | os.PathLike | None = None) -> dict:
    """The converted weights {"pnet", "rnet", "onet"} (numpy float32 trees) from a weights dir.

    path defaults to `default_weights_dir()`. Raises FileNotFoundError naming the conversion
    command when the weights are absent, ValueError when the folder holds something else.
    """
    root = Path(path) if path is not None else default_weights_dir()
    params, _ = weights.read(root, META_FILE, "MTCNN weights", CONVERT_COMMAND)
    trees.check_fits(param_shapes(), params, f"MTCNN weights in {root}")
    return params
