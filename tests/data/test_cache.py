"""FeatureCache: the arrays prepare writes come back exactly; bad caches fail naming the file."""

import json
import os

import numpy as np
import pytest
from data_helpers import write_tiny_cache

from avfbp_jax.data import cache
from avfbp_jax.data.cache import FeatureCache


@pytest.fixture
def tiny_cache(tmp_path):
    return write_tiny_cache(tmp_path)


def test_round_trip(tmp_path):
    os.makedirs(tmp_path / "clips")
    rng = np.random.default_rng(0)
    audio = rng.uniform(-1, 1, 1234).astype(np.float32)
    crops = rng.integers(0, 256, (7, 8, 8), dtype=np.uint8)
    found = np.array([1, 1, 0, 1, 0, 0, 1], bool)
    name = cache.write_clip(str(tmp_path), "happy/a b", audio, crops, found)
    assert name == "clips/happy__a_b.npz"
    assert cache.clip_summary(str(tmp_path), name) == {
        "audio_len": 1234, "num_frames": 7, "num_faces": 4}
    record = {"id": "happy/a b", "label": 1, "split": "val", "file": name, "audio_len": 1234,
              "num_frames": 7, "num_faces": 4, "speaker": "Ses01F"}
    settings = {"sample_rate": 16000, "fps": 10.0, "crop_size": 8}
    cache.write_index(str(tmp_path), ["sad", "happy"], settings, [record], [])

    fc = FeatureCache(str(tmp_path))
    assert fc.classes == ["sad", "happy"] and fc.records == [record] and fc.settings == settings
    clip = fc.get(0)
    assert clip["audio"].dtype == np.int16 and clip["audio"].shape == (1234,)
    np.testing.assert_allclose(clip["audio"] / 32767.0, audio, atol=0.5 / 32767 + 1e-7)
    np.testing.assert_array_equal(clip["frames"], crops)
    np.testing.assert_array_equal(clip["frame_mask"], found)
    assert fc.get(0) is clip  # in memory after first use
    assert FeatureCache(str(tmp_path), in_memory=False).get(0) is not clip
    np.testing.assert_allclose(fc.durations(), [0.7])  # 7 frames at 10 fps outlast audio
    assert sorted(os.listdir(tmp_path)) == ["clips", "index.json"]  # no temporary files left


def test_missing_and_bad_index(tmp_path):
    with pytest.raises(ValueError, match="index.json: no feature cache"):
        FeatureCache(str(tmp_path))
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(ValueError, match="index.json: unreadable"):
        FeatureCache(str(tmp_path))
    (tmp_path / "index.json").write_text(json.dumps({"version": 99}))
    with pytest.raises(ValueError, match="not a version-1"):
        FeatureCache(str(tmp_path))


def test_truncated_clip_file_names_it(tiny_cache):
    fc = FeatureCache(tiny_cache)
    path = os.path.join(tiny_cache, fc.records[3]["file"])
    with open(path, "r+b") as f:
        f.truncate(100)
    with pytest.raises(ValueError, match="clip003.npz: unreadable cached clip"):
        fc.get(3)
    assert cache.clip_summary(tiny_cache, fc.records[3]["file"]) is None  # prepare redoes it


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "x.bin"
    cache.atomic_write(str(path), lambda f: f.write(b"old"))

    def fail(f):
        f.write(b"half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        cache.atomic_write(str(path), fail)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["x.bin"]
