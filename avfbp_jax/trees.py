"""One check that two parameter trees fit: same paths, shapes and (optionally) dtypes.

Loading pretrained parts, `train.init_from`, export and the FER weights all compare a tree read
from disk with the tree a model wants; this names the first difference instead of each caller
writing its own comparison.
"""

from typing import Any

import jax
import numpy as np


def _leaves(tree: Any) -> dict:
    return {jax.tree_util.keystr(path): leaf
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def mismatch(want: Any, got: Any, check_dtype: bool = True) -> str | None:
    """None if `got` has exactly `want`'s paths and leaf shapes (and dtypes), else the first
    difference in words, e.g. "['fc']['kernel'] is float32[4, 8] here, float32[4, 9] wanted".

    Leaves may be arrays or jax.ShapeDtypeStruct.
    """
    want_leaves, got_leaves = _leaves(want), _leaves(got)
    for name in sorted(set(want_leaves) | set(got_leaves)):
        if name not in got_leaves:
            return f"{name} is missing"
        if name not in want_leaves:
            return f"{name} is not wanted (an extra parameter)"
        w, g = want_leaves[name], got_leaves[name]
        w_shape, g_shape = tuple(np.shape(w)), tuple(np.shape(g))
        w_dtype, g_dtype = np.dtype(w.dtype), np.dtype(g.dtype)
        if w_shape != g_shape or (check_dtype and w_dtype != g_dtype):
            return (f"{name} is {g_dtype}{list(g_shape)} here, "
                    f"{w_dtype}{list(w_shape)} wanted")
    return None


def check_fits(want: Any, got: Any, what: str, check_dtype: bool = True) -> None:
    """Raises ValueError "WHAT: DIFFERENCE" when `got` does not fit `want` (see `mismatch`)."""
    difference = mismatch(want, got, check_dtype)
    if difference is not None:
        raise ValueError(f"{what}: {difference}")
