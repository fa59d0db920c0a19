"""Converted pretrained weights on disk: the one layout the three converters write and read.

A weights folder holds `params/` (an Orbax checkpoint of a nested dict of float32 arrays) and one
JSON file saying what was converted from where (`fer.json`, `mtcnn.json`, `alexnet.json`). Both
appear at once (atomic.directory). By default a folder lives in the user's cache directory,
`$XDG_CACHE_HOME/avfbp-jax/NAME` (else `~/.cache/avfbp-jax/NAME`), outside the package, so an
installed copy finds them too; an environment variable per kind overrides it.
"""

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from avfbp_jax import atomic

PARAMS_SUBDIR = "params"


def default_dir(name: str, env: str) -> Path:
    """$ENV if set, else avfbp-jax/NAME in the user's cache folder ($XDG_CACHE_HOME if absolute,
    as the XDG spec says, else ~/.cache)."""
    if os.environ.get(env):
        return Path(os.environ[env])
    cache = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(cache):
        cache = os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "avfbp-jax" / name


def write(out: str | os.PathLike, params: Any, meta_file: str, meta: dict) -> Path:
    """Writes OUT/params (Orbax) and OUT/META_FILE (meta as JSON), both at once; returns OUT."""
    import orbax.checkpoint as ocp

    out = Path(out).resolve()
    with atomic.directory(out) as tmp:
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(Path(tmp) / PARAMS_SUBDIR, params)
            checkpointer.wait_until_finished()
        atomic.write_json(Path(tmp) / meta_file, meta)
    return out


def read(root: str | os.PathLike, meta_file: str, what: str,
         convert_command: str) -> tuple[dict, dict]:
    """(params as numpy float32, meta) of a weights folder.

    Raises FileNotFoundError naming convert_command when the folder is not there (what names the
    weights, e.g. "FER weights"). Folders written by PyTreeCheckpointer (before
    StandardCheckpointer) have the same layout on disk and load unchanged.
    """
    import jax
    import orbax.checkpoint as ocp

    root = Path(root)
    if not (root / meta_file).is_file() or not (root / PARAMS_SUBDIR).is_dir():
        raise FileNotFoundError(f"no converted {what} in {root} (want {meta_file} and "
                                f"{PARAMS_SUBDIR}/); create them with `{convert_command} "
                                f"--out {root}`")
    meta = json.loads((root / meta_file).read_text())
    with ocp.StandardCheckpointer() as checkpointer:
        params = checkpointer.restore((root / PARAMS_SUBDIR).resolve())
    return jax.tree.map(lambda a: np.asarray(a, np.float32), params), meta
