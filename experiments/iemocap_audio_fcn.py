"""IEMOCAP 4-class, audio-only attention FCN (the paper's 71.40% audio-only stage).

    avfbp train --config experiments/iemocap_audio_fcn.py --workdir runs/iemocap_audio \
        --config.data.corpus_dir=/path/to/IEMOCAP_full_release

Variant `torchvision`: the FCN in torchvision's AlexNet layout, started from its ImageNet weights
(convert torchvision's cached .pth once with `python3 -m avfbp_jax.commands.alexnet_convert`):
    avfbp train --config experiments/iemocap_audio_fcn.py:torchvision \
        --workdir runs/iemocap_audio_imagenet --config.model.audio.init_weights=weights/alexnet \
        --config.data.corpus_dir=/path/to/IEMOCAP_full_release

Its checkpoint initialises the audio stream of iemocap_amfbp.py (train.init_from).
"""

import ml_collections

from avfbp_jax.models.config import torchvision_alexnet
from avfbp_jax.train.presets import iemocap_config

VARIANTS = ("caffe", "torchvision")


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    variant = variant or "caffe"
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; valid variants: {', '.join(VARIANTS)}")
    config = iemocap_config("audio")
    if variant == "torchvision":
        torchvision_alexnet(config.model.audio)
    return config
