"""tools/synthetic_cache.py: its prepare writes what `avfbp prepare` writes, and the whole-frame
fallback cache has prepare's records, audio and frame counts (only the crops differ)."""

import pytest

from tools import synthetic_cache


@pytest.mark.slow
def test_whole_frame_cache_matches_prepare_but_the_crops(tmp_path):
    """The fallback cache (no face detector) has prepare's records, audio and frame counts."""
    import numpy as np

    from avfbp_jax.data.cache import FeatureCache
    from tests.train.conftest import tiny_corpus

    corpus, prepared = tiny_corpus(str(tmp_path))
    whole = str(tmp_path / "whole")
    synthetic_cache.write_whole_frame_cache(corpus, whole, fps=10.0, crop_size=64, workers=1)
    a, b = FeatureCache(prepared), FeatureCache(whole)
    assert len(a) == len(b) == 16 and a.classes == b.classes
    keep = ("id", "label", "split", "audio_len", "num_frames", "file")
    assert [{k: r[k] for k in keep} for r in a.records] == \
        [{k: r[k] for k in keep} for r in b.records]
    assert a.settings["fps"] == b.settings["fps"] and b.settings["crop_size"] == 64
    for i in (0, 15):
        x, y = a.get(i), b.get(i)
        np.testing.assert_array_equal(x["audio"], y["audio"])
        assert y["frames"].shape == x["frames"].shape and y["frames"].dtype == np.uint8
        assert y["frame_mask"].all() and y["frames"].std() > 10  # a picture, not zeros


@pytest.mark.slow
def test_prepare_cache_is_avfbp_prepare(tmp_path):
    from avfbp_jax.data.cache import FeatureCache
    from tests.train.conftest import tiny_corpus

    corpus, prepared = tiny_corpus(str(tmp_path))  # through `avfbp prepare`'s run()
    ours = str(tmp_path / "ours")
    synthetic_cache.prepare_cache(corpus, ours, workers=1)
    a, b = FeatureCache(prepared), FeatureCache(ours)
    assert a.settings == b.settings and a.records == b.records
