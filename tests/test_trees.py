"""The one parameter-tree check names the first difference."""

import jax
import numpy as np
import pytest

from avfbp_jax import trees

WANT = {"a": {"kernel": np.zeros((4, 8), np.float32), "bias": np.zeros(8, np.float32)}}


def test_equal_trees_fit_and_shape_structs_count_as_leaves():
    specs = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), WANT)
    assert trees.mismatch(specs, WANT) is None
    trees.check_fits(WANT, specs, "weights")


@pytest.mark.parametrize("got, words", [
    ({"a": {"kernel": np.zeros((4, 9), np.float32), "bias": np.zeros(8, np.float32)}},
     "['a']['kernel'] is float32[4, 9] here, float32[4, 8] wanted"),
    ({"a": {"kernel": np.zeros((4, 8), np.float32)}}, "['a']['bias'] is missing"),
    ({"a": {**WANT["a"], "extra": np.zeros(1)}}, "['a']['extra'] is not wanted"),
    ({"a": {"kernel": np.zeros((4, 8), np.float16), "bias": np.zeros(8, np.float32)}},
     "['a']['kernel'] is float16[4, 8] here, float32[4, 8] wanted"),
])
def test_first_difference_is_named(got, words):
    with pytest.raises(ValueError, match=r"^weights: "):
        trees.check_fits(WANT, got, "weights")
    assert words in trees.mismatch(WANT, got)


def test_dtype_check_can_be_left_out():
    got = jax.tree.map(lambda x: x.astype(np.float16), WANT)
    assert trees.mismatch(WANT, got, check_dtype=False) is None
