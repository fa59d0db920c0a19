"""TrainLoader / eval_batches: coverage, bucketing, masks, determinism, exact resume, sharding."""

import itertools
import math

import numpy as np
import pytest
from data_helpers import write_tiny_cache

from avfbp_jax.data import cache
from avfbp_jax.data.cache import FeatureCache
from avfbp_jax.data.loader import DEFAULT_BUCKETS, TrainLoader, bucket_shapes, eval_batches

KEYS = ("audio", "audio_len", "frames", "frame_len", "frame_mask", "label", "weight")


@pytest.fixture
def tiny_cache(tmp_path):
    return write_tiny_cache(tmp_path)


def take(loader, n):
    return list(itertools.islice(loader, n))


def assert_same(batches_a, batches_b):
    assert len(batches_a) == len(batches_b)
    for a, b in zip(batches_a, batches_b, strict=True):
        assert sorted(a) == sorted(b)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def clip_of(batch, r):
    """The cache index a batch row holds, decoded from its PCM audio value (i + 1) / 1000."""
    assert batch["audio"].dtype == np.int16  # the host keeps PCM; the model converts on device
    return int(round(batch["audio"][r, 0] / cache.PCM_SCALE * 1000)) - 1


def test_epoch_covers_every_clip_once_in_few_shapes(tiny_cache):
    fc = FeatureCache(tiny_cache)
    indices = np.arange(3, 50)  # 47 clips: not a multiple of the batch size
    loader = TrainLoader(fc, indices, batch_size=8, seed=0)
    assert loader.steps_per_epoch == math.ceil(47 / 8)
    batches = take(loader, loader.steps_per_epoch)
    shapes = set(bucket_shapes(DEFAULT_BUCKETS, fc.sample_rate, fc.fps))
    seen = []
    for batch in batches:
        assert sorted(batch) == sorted(KEYS)
        s, t = batch["audio"].shape[1], batch["frames"].shape[1]
        assert (s, t) in shapes and batch["frames"].shape[2:] == (8, 8)
        for r in range(8):
            i = clip_of(batch, r)
            if batch["weight"][r] == 1:
                seen.append(i)
            # Each clip fits its bucket unless it is longer than the last one, then it is cut.
            assert batch["audio_len"][r] == min(fc.audio_len[i], s)
            assert batch["frame_len"][r] == min(fc.num_frames[i], t)
            assert batch["label"][r] == fc.labels[i]
    assert sorted(seen) == list(indices)
    padded = [b for b in batches if b["weight"].min() == 0]
    assert len(padded) == 1 and padded[0]["weight"].sum() == 47 % 8
    assert loader.num_shapes <= len(DEFAULT_BUCKETS)
    loader.close()


def test_rows_hold_the_clip_with_zero_padding_and_masks(tiny_cache):
    fc = FeatureCache(tiny_cache)
    for batch in eval_batches(fc, range(50), 16):
        for r in range(16):
            i = clip_of(batch, r)
            clip = fc.get(i)
            a, t = batch["audio_len"][r], batch["frame_len"][r]
            np.testing.assert_array_equal(batch["audio"][r, :a], clip["audio"][:a])
            assert not batch["audio"][r, a:].any()
            np.testing.assert_array_equal(batch["frames"][r, :t], clip["frames"][:t])
            assert not batch["frames"][r, t:].any()
            expected = np.zeros(batch["frame_mask"].shape[1], bool)
            expected[:t] = np.arange(t) % 3 != 2  # the fixture's no-face frames
            np.testing.assert_array_equal(batch["frame_mask"][r], expected)


def test_padding_is_small_with_buckets(tiny_cache):
    fc = FeatureCache(tiny_cache)
    batches = list(eval_batches(fc, range(50), 4))
    real = sum(int(b["audio_len"][b["weight"] > 0].sum()) for b in batches)
    padded = sum(b["audio"][b["weight"] > 0].size for b in batches)
    single = 50 * bucket_shapes(DEFAULT_BUCKETS, fc.sample_rate, fc.fps)[-1][0]
    assert padded < 0.75 * single  # bucketing pads far less than one max-length shape
    assert real / padded > 0.6


def test_deterministic_and_reshuffled_per_epoch(tiny_cache):
    fc = FeatureCache(tiny_cache)
    a = take(TrainLoader(fc, range(50), 8, seed=3), 14)
    assert_same(a, take(TrainLoader(fc, range(50), 8, seed=3, prefetch=6, threads=4), 14))
    assert_same(a, take(TrainLoader(fc, range(50), 8, seed=3, prefetch=1, threads=1), 14))
    other = take(TrainLoader(fc, range(50), 8, seed=4), 7)
    assert any((x["label"] != y["label"]).any() or x["audio"].shape != y["audio"].shape
               for x, y in zip(a[:7], other, strict=True))
    epoch0 = [clip_of(b, r) for b in a[:7] for r in range(8)]
    epoch1 = [clip_of(b, r) for b in a[7:] for r in range(8)]
    assert epoch0 != epoch1


@pytest.mark.parametrize("k", [3, 7, 10])  # mid-epoch, on the epoch boundary, in epoch 2
def test_resume_continues_exactly(tiny_cache, k):
    fc = FeatureCache(tiny_cache)
    reference = TrainLoader(fc, range(50), 8, seed=5, prefetch=3)
    expected = take(reference, k + 6)

    first = TrainLoader(fc, range(50), 8, seed=5, prefetch=3)
    take(first, k)
    state = first.get_state()
    assert state["epoch"] * first.steps_per_epoch + state["step"] == k
    first.close()
    resumed = TrainLoader(fc, range(50), 8, seed=5)
    resumed.set_state(dict(state))
    assert_same(take(resumed, 6), expected[k:])
    with pytest.raises(ValueError, match="does not match"):
        TrainLoader(fc, range(49), 8, seed=5).set_state(state)
    for loader in (reference, resumed):
        loader.close()


def test_processes_split_each_global_batch(tiny_cache):
    fc = FeatureCache(tiny_cache)
    single = take(TrainLoader(fc, range(50), 8, seed=1), 9)
    parts = [take(TrainLoader(fc, range(50), 8, seed=1, process_index=p, process_count=4), 9)
             for p in range(4)]
    for step, batch in enumerate(single):
        joined = {k: np.concatenate([parts[p][step][k] for p in range(4)]) for k in batch}
        assert_same([joined], [batch])
        assert parts[0][step]["audio"].shape[0] == 2
    evals = list(eval_batches(fc, range(50), 8, with_index=True))
    evals_parts = [list(eval_batches(fc, range(50), 8, process_index=p, process_count=2,
                                     with_index=True)) for p in range(2)]
    for step, batch in enumerate(evals):
        joined = {k: np.concatenate([evals_parts[p][step][k] for p in range(2)]) for k in batch}
        assert_same([joined], [batch])
    with pytest.raises(ValueError, match="must divide"):
        TrainLoader(fc, range(50), 8, seed=1, process_index=0, process_count=3)


def test_eval_batches_index_and_weights(tiny_cache):
    fc = FeatureCache(tiny_cache)
    batches = list(eval_batches(fc, range(10, 40), 8, with_index=True))
    index = np.concatenate([b["index"] for b in batches])
    weight = np.concatenate([b["weight"] for b in batches])
    assert sorted(index[weight == 1]) == list(range(10, 40))
    assert (index[weight == 0] == -1).all() and (weight == 0).sum() == 2
    assert_same(batches, list(eval_batches(fc, range(10, 40), 8, with_index=True)))


def test_a_failing_read_surfaces_in_the_consumer(tiny_cache, monkeypatch):
    fc = FeatureCache(tiny_cache)

    def broken(i):
        raise ValueError(f"clip {i}: cannot be read")

    monkeypatch.setattr(fc, "get", broken)  # an error raised in an assembling thread
    loader = TrainLoader(fc, [7], 1, seed=0)
    with pytest.raises(ValueError, match="clip 7: cannot be read"):
        next(loader)
    assert loader.get_state()["step"] == 0  # the failed batch was not handed out
