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
    assert fc.classes == ["sad", "happy"] and fc.settings == settings
    assert fc.records == [{**record, "audio_offset": 0, "frame_offset": 0}]
    for in_memory in (True, False):
        clip = FeatureCache(str(tmp_path), in_memory=in_memory).get(0)
        assert clip["audio"].dtype == np.int16 and clip["audio"].shape == (1234,)
        np.testing.assert_allclose(clip["audio"] / 32767.0, audio, atol=0.5 / 32767 + 1e-7)
        np.testing.assert_array_equal(clip["frames"], crops)
        np.testing.assert_array_equal(clip["frame_mask"], found)
        # Views of the packed arrays: read into memory, or a memory map of the packed file.
        assert isinstance(clip["frames"].base, np.memmap) != in_memory
    np.testing.assert_allclose(fc.durations(), [0.7])  # 7 frames at 10 fps outlast audio
    assert sorted(os.listdir(tmp_path)) == ["clips", "index.json", "packed"]  # no temporaries
    assert sorted(os.listdir(tmp_path / "packed")) == ["audio.int16", "crops.uint8", "found.bool"]


def test_packed_arrays_hold_every_clip_at_its_offsets(tiny_cache):
    with open(os.path.join(tiny_cache, "index.json")) as f:
        records = json.load(f)["records"]
    fc = FeatureCache(tiny_cache, in_memory=False)
    for i, record in enumerate(records):
        with np.load(os.path.join(tiny_cache, record["file"])) as z:
            clip = fc.get(i)
            np.testing.assert_array_equal(clip["audio"], z["audio"])
            np.testing.assert_array_equal(clip["frames"], z["crops"])
            np.testing.assert_array_equal(clip["frame_mask"], z["found"])
    ends = [(r["audio_offset"] + r["audio_len"], r["frame_offset"] + r["num_frames"])
            for r in records]
    assert [(r["audio_offset"], r["frame_offset"]) for r in records[1:]] == ends[:-1]


def test_missing_and_bad_index(tmp_path):
    with pytest.raises(ValueError, match="index.json: no feature cache"):
        FeatureCache(str(tmp_path))
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(ValueError, match="index.json: unreadable"):
        FeatureCache(str(tmp_path))
    (tmp_path / "index.json").write_text(json.dumps({"classes": []}))
    with pytest.raises(ValueError, match="index.json: not an avfbp feature cache index"):
        FeatureCache(str(tmp_path))
    (tmp_path / "index.json").write_text(json.dumps({"version": 1}))
    with pytest.raises(ValueError, match="a version-1 feature cache; this code reads version 2: "
                                         "re-run `avfbp prepare`"):
        FeatureCache(str(tmp_path))


def test_truncated_files_are_named(tiny_cache):
    fc = FeatureCache(tiny_cache)
    with open(os.path.join(tiny_cache, fc.records[3]["file"]), "r+b") as f:
        f.truncate(100)
    assert cache.clip_summary(tiny_cache, fc.records[3]["file"]) is None  # prepare redoes it
    path = cache.packed_file(tiny_cache, "crops")
    with open(path, "r+b") as f:
        f.truncate(1000)
    for in_memory in (True, False):
        with pytest.raises(ValueError, match=r"packed/crops.uint8: 1000 bytes, expected \d+; "
                                             "re-run `avfbp prepare`"):
            FeatureCache(tiny_cache, in_memory=in_memory)
