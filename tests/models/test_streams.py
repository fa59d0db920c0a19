"""Audio and video streams: masks follow every stride and pool; attention weights are masked."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_helpers import random_variables, tiny_config

from avfbp_jax.models.audio import AudioFCN
from avfbp_jax.models.config import torchvision_alexnet
from avfbp_jax.models.video import VideoStream, max_pool_2x2
from avfbp_jax.ops import attention_weights


@pytest.mark.parametrize("layout", ["caffe", "torchvision"])
def test_fcn_valid_outputs_equal_the_exact_length_run(layout):
    cfg = tiny_config().audio
    if layout == "torchvision":  # conv1 padded by 2: its right pad must see zeros, not padding
        torchvision_alexnet(cfg).width = 0.125
    rng = np.random.default_rng(0)
    lengths = [150, 95, 40, 12]
    spec = rng.standard_normal((4, 170, 200)).astype(np.float32)
    spec[np.arange(170)[None, :] >= np.array(lengths)[:, None]] = 0.0
    fcn = AudioFCN(cfg)
    variables = random_variables(fcn, spec, np.array(lengths))
    h, out_len = jax.jit(fcn.apply)(variables, spec, np.array(lengths))
    assert int(out_len[0]) > 1 and int(out_len[3]) == 0
    for b, length in enumerate(lengths):
        # The reference: the same recording cut to exactly its valid length (no padding at all).
        if int(out_len[b]) > 0:  # shorter inputs leave no step after the last pool
            exact, exact_len = fcn.apply(variables, spec[b: b + 1, :length], np.array([length]))
            assert exact.shape[1] == int(out_len[b]) == int(exact_len[0])
            np.testing.assert_allclose(h[b, : int(out_len[b])], exact[0], atol=1e-4, rtol=1e-4)
        assert np.all(np.asarray(h)[b, int(out_len[b]):] == 0)


def test_video_attention_is_masked_and_frames_are_independent():
    cfg = tiny_config()
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (2, 6, 16, 16), dtype=np.uint8)
    frame_len = np.array([6, 3])
    mask = np.array([[True, False, True, True, True, True], [True] * 6])
    for attention in ("sigmoid", "softmax"):
        cfg.video.attention = attention
        stream = VideoStream(cfg.video)
        variables = random_variables(stream, frames, frame_len, mask)
        seq = stream.apply(variables, frames, frame_len, mask)
        weights = np.asarray(attention_weights(seq))
        assert weights[0, 1] == 0 and np.all(weights[1, 3:] == 0)
        np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
        scores = np.asarray(seq.scores)[0, [0, 2, 3, 4, 5]]
        want = jax.nn.softmax(scores) if attention == "softmax" else jax.nn.sigmoid(scores)
        np.testing.assert_allclose(weights[0, [0, 2, 3, 4, 5]], want / np.sum(want), rtol=1e-5)
        # Changing a masked-out frame changes nothing the stream reports for valid frames.
        other = frames.copy()
        other[0, 1] = 255 - other[0, 1]
        seq2 = stream.apply(variables, other, frame_len, mask)
        np.testing.assert_allclose(seq2.features[0, [0, 2]], seq.features[0, [0, 2]], rtol=1e-6)


def test_identity_encoder_passes_features_through():
    cfg = tiny_config(**{"video.encoder": "identity", "video.layer_norm": False})
    feats = jnp.asarray(np.random.default_rng(2).standard_normal((2, 4, 16)), jnp.float32)
    stream = VideoStream(cfg.video)
    args = (feats, np.array([4, 2]), np.ones((2, 4), bool))
    seq = stream.apply(random_variables(stream, *args), *args)
    np.testing.assert_array_equal(seq.features, feats)
    np.testing.assert_array_equal(seq.mask[1], [True, True, False, False])


def test_max_pool_2x2_equals_flax_max_pool_values_and_gradients():
    def flax_pool(v):
        return nn.max_pool(v, (2, 2), strides=(2, 2), padding="VALID")

    for shape in ((3, 8, 6, 4), (2, 7, 9, 3)):  # even, and odd sizes (last row/column dropped)
        x = jnp.asarray(np.random.default_rng(0).standard_normal(shape), jnp.float32)
        want = flax_pool(x)
        np.testing.assert_array_equal(max_pool_2x2(x), want)
        cot = jnp.asarray(np.random.default_rng(1).standard_normal(want.shape), jnp.float32)
        grads = [jax.grad(lambda v, pool=pool, cot=cot: jnp.sum(pool(v) * cot))(x)
                 for pool in (max_pool_2x2, flax_pool)]
        np.testing.assert_array_equal(grads[0], grads[1])
