"""Batch assembly shared by the loader and predict: bucket choice and padding to the contract."""

import numpy as np
import pytest

from avfbp_jax.data.batch import assign_buckets, bucket_shapes, collate
from avfbp_jax.data.pool import process_map


def test_assign_buckets_takes_the_shortest_that_holds_each_clip():
    buckets = (2.0, 3.0, 12.0)
    got = assign_buckets([0.1, 2.0, 2.0 + 1e-9, 2.01, 3.0, 11.9, 12.5], buckets)
    np.testing.assert_array_equal(got, [0, 0, 0, 1, 1, 2, 3])  # 3: past the last bucket
    assert bucket_shapes(buckets, 16000, 10.0) == [(32000, 20), (48000, 30), (192000, 120)]
    for bad in ((), (3.0, 2.0)):
        with pytest.raises(ValueError, match="non-empty increasing"):
            assign_buckets([1.0], bad)


def test_collate_pads_cuts_and_keeps_dtypes():
    clips = [
        {"audio": np.arange(1, 6, dtype=np.int16), "frames": np.full((3, 4, 4), 7, np.uint8),
         "frame_mask": np.array([True, False, True])},
        {"audio": np.zeros(0, np.int16), "frames": np.zeros((0, 4, 4), np.uint8),
         "frame_mask": np.zeros(0, bool)},  # no audio, no frames: both streams masked
        {"audio": np.arange(1, 11, dtype=np.int16), "frames": np.ones((6, 4, 4), np.uint8),
         "frame_mask": np.ones(6, bool)},  # longer than the batch: cut
    ]
    batch = collate(clips, 8, 4, labels=np.array([2, 0, 1]))
    assert batch["audio"].dtype == np.int16 and batch["audio"].shape == (3, 8)
    np.testing.assert_array_equal(batch["audio_len"], [5, 0, 8])
    np.testing.assert_array_equal(batch["audio"][0], [1, 2, 3, 4, 5, 0, 0, 0])
    np.testing.assert_array_equal(batch["frame_len"], [3, 0, 4])
    np.testing.assert_array_equal(batch["frame_mask"][0], [True, False, True, False])
    assert not batch["frame_mask"][1].any() and batch["frame_mask"][2].all()
    assert batch["frames"].shape == (3, 4, 4, 4) and not batch["frames"][0, 3].any()
    np.testing.assert_array_equal(batch["label"], [2, 0, 1])
    np.testing.assert_array_equal(batch["weight"], [1, 1, 1])
    features = [{"audio": np.ones(3, np.float32), "frames": np.ones((2, 128), np.float32),
                 "frame_mask": np.ones(2, bool)}]
    batch = collate(features, 4, 3, weights=np.array([0.0]))
    assert batch["audio"].dtype == np.float32 and batch["frames"].shape == (1, 3, 128)
    assert batch["weight"][0] == 0 and batch["label"][0] == 0


def test_process_map_in_order_or_as_finished():
    jobs = list(range(7))
    for workers in (1, 2):
        with process_map(abs, [-j for j in jobs], workers) as results:
            assert list(results) == jobs
        with process_map(abs, [-j for j in jobs], workers, ordered=False) as results:
            assert sorted(results) == jobs
