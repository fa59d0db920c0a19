"""Experiment configs for the tools (run_table, the device suite's e2e section): the one place
the tools reach the package's config loading and `--config.FIELD=VALUE` overrides."""

from __future__ import annotations

from collections.abc import Sequence

import ml_collections

from avfbp_jax.train.main import apply_overrides, load_config_file


def load_experiment(path: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """get_config() of an experiment file (`path:ARG` for get_config(ARG)), with overrides given
    as `--config.FIELD=VALUE` (or `config.FIELD=VALUE`) applied in order."""
    config = load_config_file(path)
    apply_overrides(config, list(overrides))
    return config
