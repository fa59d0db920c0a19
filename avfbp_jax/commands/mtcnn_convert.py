"""Converts the `mtcnn` wheel's P-, R- and O-Net weights into an Orbax checkpoint for the Flax port.

  python3 -m avfbp_jax.commands.mtcnn_convert [--out DIR] [--wheel mtcnn-0.1.1-py3-none-any.whl]

Without --wheel it runs `pip download --no-deps mtcnn==0.1.1` into a temporary folder, so none
of mtcnn's dependencies (TensorFlow, Keras, OpenCV) are installed. Why 0.1.1: its weights file
`mtcnn/data/mtcnn_weights.npy` (facenet's det1/2/3 as Keras weight lists) is read with numpy
alone, while mtcnn 1.0's `assets/weights/*.lz4` need joblib and lz4; both are MIT. The file is a
pickle, so it is unpickled only after its SHA-256 matched the pinned one. DIR (default:
$AVFBP_MTCNN_WEIGHTS, else ${XDG_CACHE_HOME:-~/.cache}/avfbp-jax/mtcnn) receives `params/`
(Orbax: {"pnet", "rnet", "onet"} -> Linen params) and `mtcnn.json`, both at once.
"""

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np

from avfbp_jax import interrupt, pinned_wheel, trees, weights
from avfbp_jax.data import mtcnn_nets

MTCNN_VERSION = "0.1.1"
WHEEL_MEMBER = "mtcnn/data/mtcnn_weights.npy"
MTCNN_SHA256 = "9e04e975abf93c7173e956df4b496d6da269e08b9e87f2daec963ee1176576b0"

# The port's layers in the order of the file's Keras weight lists (Keras creation order): a
# PReLU holds one array (alpha), every other layer two (kernel, bias).
LAYERS = {
    "pnet": ("conv1", "prelu1", "conv2", "prelu2", "conv3", "prelu3", "score", "box"),
    "rnet": ("conv1", "prelu1", "conv2", "prelu2", "conv3", "prelu3", "fc", "prelu4",
             "score", "box"),
    "onet": ("conv1", "prelu1", "conv2", "prelu2", "conv3", "prelu3", "conv4", "prelu4",
             "fc", "prelu5", "score", "box", "landmarks"),
}


class ConversionError(Exception):
    """The weights file cannot be read or does not fit the port."""


def _net_params(arrays: list[np.ndarray], layers: tuple[str, ...]) -> dict:
    """One net's Keras weight list -> Linen params in the natural (untransposed) image layout."""
    arrays = [np.asarray(a, np.float32) for a in arrays]
    wanted = sum(1 if name.startswith("prelu") else 2 for name in layers)
    if len(arrays) != wanted:
        raise ConversionError(f"{len(arrays)} arrays, the port's layers take {wanted}")
    params, channels = {}, None
    for name in layers:
        if name.startswith("prelu"):
            params[name] = {"alpha": arrays.pop(0).reshape(-1)}
            continue
        kernel, bias = arrays.pop(0), arrays.pop(0)
        if kernel.ndim == 4:  # conv [kx, ky, in, out] on transposed images -> [ky, kx, in, out]
            kernel, channels = kernel.swapaxes(0, 1), kernel.shape[-1]
        elif name == "fc":  # rows in the transposed map's flatten order (x, y, c) -> (y, x, c)
            side = math.isqrt(kernel.shape[0] // channels)
            kernel = kernel.reshape(side, side, channels, -1).transpose(1, 0, 2, 3)
            kernel = kernel.reshape(side * side * channels, -1)
        params[name] = {"kernel": np.ascontiguousarray(kernel), "bias": bias}
    return params


def convert_params(weights: dict[str, list[np.ndarray]]) -> dict:
    """The file's {"pnet", "rnet", "onet"} -> Keras weight lists, as the port's parameter tree."""
    params = {}
    for net, layers in LAYERS.items():
        if net not in weights:
            raise ConversionError(f"no {net!r} weights (found {sorted(weights)})")
        try:
            params[net] = _net_params(list(weights[net]), layers)
        except (ValueError, ConversionError) as e:
            raise ConversionError(f"{net}: {e}") from e
    difference = trees.mismatch(mtcnn_nets.param_shapes(), params)
    if difference is not None:
        raise ConversionError(f"the weights do not fit the port: {difference}")
    return params


def read_weights(path: str | os.PathLike) -> dict:
    """Reads mtcnn_weights.npy (a pickled dict of lists) and converts it. It runs the pickle:
    only for a trusted file, such as one whose pinned SHA-256 was checked."""
    try:
        weights = np.load(path, allow_pickle=True).item()
    except Exception as e:  # unpickling raises whatever the file's content makes it raise
        raise ConversionError(f"{path}: not a readable mtcnn weights file ({e})") from e
    if not isinstance(weights, dict):
        raise ConversionError(f"{path}: holds a {type(weights).__name__}, not a dict of nets")
    return convert_params(weights)


def convert(out: str | os.PathLike | None = None, wheel: str | os.PathLike | None = None,
            sha256: str = MTCNN_SHA256) -> Path:
    """Fetches (or takes) the wheel, checks and converts its weights file, writes out."""
    out = Path(out) if out is not None else mtcnn_nets.default_weights_dir()
    with tempfile.TemporaryDirectory(prefix="mtcnn_convert-") as scratch:
        wheel = Path(wheel) if wheel is not None else pinned_wheel.download(
            "mtcnn", MTCNN_VERSION, scratch)
        params = read_weights(pinned_wheel.extract(wheel, WHEEL_MEMBER, sha256, scratch))
    meta = {"source": f"{wheel.name}:{WHEEL_MEMBER}", "sha256": sha256,
            "nets": list(LAYERS),
            "num_params": int(sum(a.size for a in jax.tree.leaves(params)))}
    return weights.write(out, params, mtcnn_nets.META_FILE, meta)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m avfbp_jax.commands.mtcnn_convert",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help=f"output dir (default: "
                        f"${mtcnn_nets.WEIGHTS_ENV} or ~/.cache/avfbp-jax/mtcnn)")
    parser.add_argument("--wheel", default=None, help=f"a local mtcnn-{MTCNN_VERSION} wheel")
    args = parser.parse_args(argv)

    def run() -> int:
        try:
            out = convert(args.out, wheel=args.wheel)
        except (ConversionError, pinned_wheel.PinnedFileError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"wrote MTCNN weights to {out}")
        return 0

    return interrupt.run_command(parser.prog, run)


if __name__ == "__main__":
    sys.exit(main())
