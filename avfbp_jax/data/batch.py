"""Batch assembly, shared by the training loader and predict: length buckets and padding.

A clip goes to the shortest bucket (seconds) at least as long as it; a batch of bucket b has
audio padded to round(b * sample_rate) samples and frames padded to ceil(b * fps), so only a few
batch shapes ever reach a compiled function. What happens to a clip longer than the last bucket
is the caller's choice: the loader cuts it to the last bucket (a bounded set of shapes for
training), predict pads to whole seconds instead (a user's recording is never cut).
"""

import math
from collections.abc import Sequence

import numpy as np


def bucket_shapes(buckets: Sequence[float], sample_rate: int, fps: float) -> list[tuple[int, int]]:
    """(audio samples, frames) of each bucket (seconds)."""
    return [(round(s * sample_rate), math.ceil(s * fps - 1e-6)) for s in buckets]


def assign_buckets(durations: Sequence[float] | np.ndarray,
                   buckets: Sequence[float]) -> np.ndarray:
    """The index of the shortest bucket at least as long as each duration (seconds), or
    len(buckets) for a duration longer than the last bucket."""
    if list(buckets) != sorted(buckets) or len(buckets) == 0:
        raise ValueError(f"buckets must be a non-empty increasing list of seconds, got {buckets}")
    return np.searchsorted(np.asarray(buckets, np.float64),
                           np.asarray(durations, np.float64) - 1e-6)


def collate(clips: Sequence[dict], samples: int, frames: int,
            labels: np.ndarray | None = None, weights: np.ndarray | None = None) -> dict:
    """A batch per the contract in avfbp_jax/data/__init__.py from clip dicts (FeatureCache.get
    or prepare.load_clip: audio, frames, frame_mask), padded or cut to `samples` audio samples
    and `frames` frames. A clip's audio may be empty (audio_len 0: the model masks the stream
    out), and so may its frames. labels default to 0 and weights to 1."""
    n = len(clips)
    first = clips[0]["frames"]  # uint8 crops [T, S, S] or float32 features [T, D]
    batch = {
        "audio": np.zeros((n, samples), clips[0]["audio"].dtype),  # int16 PCM or float32
        "audio_len": np.zeros(n, np.int32),
        "frames": np.zeros((n, frames, *first.shape[1:]), first.dtype),
        "frame_len": np.zeros(n, np.int32),
        "frame_mask": np.zeros((n, frames), bool),
        "label": np.zeros(n, np.int32) if labels is None else labels.astype(np.int32),
        "weight": np.ones(n, np.float32) if weights is None else weights.astype(np.float32),
    }
    for r, clip in enumerate(clips):
        a = min(len(clip["audio"]), samples)
        t = min(len(clip["frames"]), frames)
        batch["audio"][r, :a] = clip["audio"][:a]
        batch["audio_len"][r] = a
        batch["frames"][r, :t] = clip["frames"][:t]
        batch["frame_len"][r] = t
        batch["frame_mask"][r, :t] = clip["frame_mask"][:t]
    return batch
