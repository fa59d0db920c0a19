"""Synthetic corpus, fusion "concat" (one row of the fusion table; see synthetic_amfbp.py)."""

from avfbp_jax.train.presets import synthetic_config


def get_config():
    return synthetic_config("concat")
