"""copy_matching_params (train.init_from): named subtrees copied, misfits named."""

import jax.numpy as jnp
import numpy as np
import pytest

from avfbp_jax.train.state import copy_matching_params


def test_copy_matching_params_copies_and_names_misfits():
    params = {"audio": {"w": jnp.zeros((2, 3))}, "fusion": {"b": jnp.zeros(4)}}
    source = {"audio": {"w": np.ones((2, 3), np.float32)}, "fusion": {"b": np.ones(5)}}
    copied = copy_matching_params(params, source, ("audio",))
    np.testing.assert_array_equal(copied["audio"]["w"], np.ones((2, 3)))
    assert copied["fusion"] is params["fusion"]
    wider = {"audio": {"w": np.ones((2, 4), np.float32)}}
    with pytest.raises(ValueError, match=r"init_from: params 'audio' .* do not fit this model "
                                         r".*: \['w'\] is float32\[2, 4\] here, float32\[2, 3\]"):
        copy_matching_params(params, wider, ("audio",))
    with pytest.raises(ValueError, match="source checkpoint has no params 'audio'"):
        copy_matching_params(params, {"fusion": source["fusion"]}, ("audio",))
    with pytest.raises(ValueError, match="the model has no params starting with"):
        copy_matching_params(params, source, ("video",))
