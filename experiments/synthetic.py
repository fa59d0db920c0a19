"""The embedded synthetic corpus (generated and prepared if missing), one fusion type per variant.

The main job, AM-FBP:
    avfbp train --config experiments/synthetic.py --workdir runs/main
One row of the fusion table (variants: audio, video, concat, late, gfbp, agfbp, amfbp):
    avfbp train --config experiments/synthetic.py:gfbp --workdir runs/gfbp

Small widths for a 2-core CPU: see avfbp_jax.train.presets.synthetic_config.
"""

import ml_collections

from avfbp_jax.models.config import FUSION_TYPES
from avfbp_jax.train.presets import synthetic_config


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    variant = variant or "amfbp"
    if variant not in FUSION_TYPES:
        raise ValueError(f"unknown variant {variant!r}; valid variants: {', '.join(FUSION_TYPES)}")
    return synthetic_config(variant)
