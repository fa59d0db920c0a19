"""ImageNet AlexNet convolutions as the starting point of the audio FCN (torchvision's layout).

The paper initialises the audio stream's AlexNet convolutions from ImageNet. torchvision's
AlexNet (`features.{0,3,6,8,10}`: 64-192-384-256-256 channels, kernels 11-5-3-3-3, conv1 stride 4
padding 2, later paddings 2-1-1-1, max-pool 3/2 after conv1, conv2 and conv5, no LRN) is what
users have on disk; `models.config.torchvision_alexnet` gives the FCN that layout, and this module
maps its weights onto the FCN's parameters (`alexnet_convert` writes them once as a weights folder,
`load_fcn_params` reads them back for `model.audio.init_weights`).

How the one-channel spectrogram meets the RGB filters (stated choices):
- Colour: conv1's three input-channel filters are summed, which gives exactly the response to the
  spectrogram replicated into R, G and B. ImageNet's per-channel mean/std normalisation is not
  applied; the front end's per-utterance normalisation takes its place.
- Orientation: the spectrogram is the image with frequency along the image's height (row 0 the
  lowest bin) and time along its width, as spectrograms are drawn (up to the vertical flip). The
  FCN's maps are [B, time, frequency, C], so each torch kernel [O, I, kh, kw] becomes the Flax
  kernel [kw, kh, I, O].
"""

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from avfbp_jax import weights

# torchvision's AlexNet: the convolution modules of `features`, in order, and their shapes.
TORCHVISION_KEYS = ("features.0", "features.3", "features.6", "features.8", "features.10")
TORCHVISION_SHAPES = ((64, 3, 11, 11), (192, 64, 5, 5), (384, 192, 3, 3), (256, 384, 3, 3),
                      (256, 256, 3, 3))
# The file torchvision downloads for AlexNet_Weights.IMAGENET1K_V1; torchvision names its
# weight files NAME-<first 8 hex digits of the file's SHA-256>.pth.
PUBLISHED_FILE = "alexnet-owt-7be5be79.pth"
META_FILE = "alexnet.json"


class WeightsError(ValueError):
    """A state_dict or converted folder that does not hold torchvision's AlexNet convolutions."""


def fcn_params_from_state_dict(state: Mapping[str, np.ndarray]) -> dict:
    """{"conv1".."conv5": {"kernel", "bias"}} float32 for `AudioFCN` from torchvision's
    AlexNet state_dict (arrays; the classifier's entries are ignored)."""
    params = {}
    for i, (key, shape) in enumerate(zip(TORCHVISION_KEYS, TORCHVISION_SHAPES, strict=True)):
        names = (f"{key}.weight", f"{key}.bias")
        missing = [n for n in names if n not in state]
        if missing:
            raise WeightsError(f"no {', '.join(missing)} (not torchvision's AlexNet state_dict; "
                               f"it has {sorted(state)[:8]}...)")
        weight, bias = (np.asarray(state[n], np.float32) for n in names)
        if weight.shape != shape or bias.shape != shape[:1]:
            raise WeightsError(f"{key} is {list(weight.shape)} + bias {list(bias.shape)}, "
                               f"torchvision's AlexNet has {list(shape)} + [{shape[0]}]")
        if i == 0:
            weight = weight.sum(axis=1, keepdims=True)  # RGB filters meet one gray channel
        params[f"conv{i + 1}"] = {"kernel": np.ascontiguousarray(weight.transpose(3, 2, 1, 0)),
                                  "bias": bias}
    return params


def load_fcn_params(path: str | os.PathLike) -> dict:
    """The converted FCN parameters in `path` (a folder `alexnet_convert` wrote), as numpy."""
    params, meta = weights.read(path, META_FILE, "AlexNet weights",
                                f"python3 -m avfbp_jax.commands.alexnet_convert {PUBLISHED_FILE}")
    if meta.get("layout") != "torchvision":
        raise WeightsError(f"{Path(path) / META_FILE}: layout {meta.get('layout')!r}, "
                           "want 'torchvision'")
    return params
