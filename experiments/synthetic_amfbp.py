"""The main job: AM-FBP on the embedded synthetic corpus (generated and prepared if missing).

    avfbp train --config experiments/synthetic_amfbp.py --workdir runs/main

Small widths for a 2-core CPU: see avfbp_jax.train.presets.synthetic_config.
"""

from avfbp_jax.train.presets import synthetic_config


def get_config():
    return synthetic_config("amfbp")
