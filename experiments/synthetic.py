"""The embedded synthetic corpus (generated and prepared if missing), one fusion type per variant.

The main job, AM-FBP:
    avfbp train --config experiments/synthetic.py --workdir runs/main
One row of the fusion table (variants: the fusion types audio, video, concat, late, gfbp,
agfbp, amfbp, mfh, mlb, mutan, tucker, block, mcb, tfn, lmf, and ag-X / am-X for a family member X
in the adaptive / multi-level wrapper, e.g. am-mutan):
    avfbp train --config experiments/synthetic.py:gfbp --workdir runs/gfbp

Small widths for a 2-core CPU: see avfbp_jax.train.presets.synthetic_config.
"""

import ml_collections

from avfbp_jax.train.presets import synthetic_config


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    return synthetic_config(variant or "amfbp")
