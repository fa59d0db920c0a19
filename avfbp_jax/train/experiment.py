"""Experiment configs: an experiment file's get_config(), then command-line overrides on it.

    config = load_config_file("experiments/synthetic.py:gfbp")  # get_config("gfbp")
    apply_overrides(config, ["--config.train.num_steps=5", "--config.seed", "1"])

Overrides are parsed by ml_collections.config_flags (the absl flags of big_vision and the Flax
examples): `--config.FIELD=VALUE` or `--config.FIELD VALUE`, the value converted to the field's
type; a tuple field takes a Python tuple (`--config.data.buckets="(2.0, 4.0)"`, `2,3` for
numbers) or the flag repeated (`--config.train.frozen=audio --config.train.frozen=video`); a
boolean also takes `--config.FIELD` (true) and `--noconfig.FIELD` (false).
"""

import difflib
import importlib.util
import inspect
import os
from collections.abc import Sequence

import ml_collections
from absl import flags
from ml_collections import config_flags


def load_config_file(path: str) -> ml_collections.ConfigDict:
    """get_config() of an experiment file: `path`, or `path:VARIANT` for get_config(VARIANT).

    Raises FileNotFoundError for a missing file and ValueError, naming the file, for a file
    without get_config() or a variant it refuses.
    """
    path, _, variant = path.partition(":")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such experiment config file")
    spec = importlib.util.spec_from_file_location(f"avfbp_experiment_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"{path}: an experiment config file must define get_config()")
    if not variant:
        return module.get_config()
    if not inspect.signature(module.get_config).parameters:
        raise ValueError(f"{path}: this experiment has no variants (got {variant!r})")
    try:
        return module.get_config(variant)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> None:
    """Sets the `--config.FIELD=VALUE` arguments (absl syntax, see the module docstring) on
    `config` in place.

    Raises KeyError for a field the config does not have and ValueError for anything else
    (a value of the wrong type, a missing value, an argument that is not a --config. override).
    """
    argv = ["avfbp", *overrides]
    for arg in overrides:
        name = arg.split("=", 1)[0].lstrip("-")
        if name.startswith(("config.", "noconfig.")):
            _check_field(config, name.split(".", 1)[1])
    flag_values = flags.FlagValues()
    try:
        config_flags.DEFINE_config_dict("config", config, flag_values=flag_values,
                                        sys_argv=argv, lock_config=False)
        rest = flag_values(argv)
    except flags.Error as e:
        raise ValueError(str(e)) from None
    if rest[1:]:
        raise ValueError(f"unexpected argument {rest[1]!r}: overrides are --config.FIELD=VALUE")


def _check_field(config: ml_collections.ConfigDict, path: str) -> None:
    """Raises KeyError naming `path` (and the closest field, or all of them) when `config` has
    no such field."""
    node, parts = config, path.split(".")
    for i, part in enumerate(parts):
        where = ".".join(["config", *parts[:i]])
        if not isinstance(node, ml_collections.ConfigDict):
            raise KeyError(f"--config.{path}: {where} is a value, not a group of fields")
        if part not in node:
            close = difflib.get_close_matches(part, list(node.keys()), n=1)
            hint = f"did you mean {close[0]!r}?" if close else "fields: " + ", ".join(node.keys())
            raise KeyError(f"--config.{path}: {where} has no field {part!r} ({hint})")
        node = node[part]
