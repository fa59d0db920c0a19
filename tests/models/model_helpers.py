"""Tiny model configs and batches shared by the model tests (fast on a 2-core CPU)."""

import jax
import numpy as np

from avfbp_jax.models.config import tiny_model_config as tiny_config  # noqa: F401 (re-exported)
from avfbp_jax.models.model import example_batch

SECONDS = 2.0
FRAMES = 8


def varied_batch(cfg, seed=0):
    """Three recordings of different valid lengths, one with face-less frames, zero-padded."""
    batch = example_batch(cfg, 3, SECONDS, FRAMES, seed=seed)
    batch["audio_len"] = np.array([32000, 21000, 9000], np.int32)  # 2 s, 1.3 s, 0.56 s
    batch["frame_len"] = np.array([8, 5, 2], np.int32)
    mask = np.arange(FRAMES)[None, :] < batch["frame_len"][:, None]
    mask[1, 1] = False  # no face found in this frame
    batch["frame_mask"] = mask
    batch["audio"] = np.where(np.arange(batch["audio"].shape[1]) < batch["audio_len"][:, None],
                              batch["audio"], 0.0).astype(np.float32)
    return batch


def pad_further(batch, extra_samples, extra_frames, seed=1):
    """The same recordings padded further, with garbage (not zeros) past every valid length."""
    rng = np.random.default_rng(seed)
    out = dict(batch)
    b, s = batch["audio"].shape
    audio = rng.standard_normal((b, s + extra_samples)).astype(np.float32)
    valid = np.arange(s + extra_samples)[None, :] < batch["audio_len"][:, None]
    out["audio"] = np.where(valid, np.pad(batch["audio"], ((0, 0), (0, extra_samples))), audio)
    frames = batch["frames"]
    t = frames.shape[1]
    if frames.dtype == np.uint8:
        junk = rng.integers(0, 256, (b, t + extra_frames) + frames.shape[2:], dtype=np.uint8)
    else:
        junk = rng.standard_normal((b, t + extra_frames) + frames.shape[2:]).astype(frames.dtype)
    inside = (np.arange(t + extra_frames)[None, :] < batch["frame_len"][:, None]).reshape(
        (b, t + extra_frames) + (1,) * (frames.ndim - 2))
    widened = np.pad(frames, ((0, 0), (0, extra_frames)) + ((0, 0),) * (frames.ndim - 2))
    out["frames"] = np.where(inside, widened, junk)
    out["frame_mask"] = np.pad(batch["frame_mask"], ((0, 0), (0, extra_frames)))
    return out


def random_variables(module, *args, seed=0, **kwargs):
    """Random variables of `module`'s shapes without compiling its initializers.

    Initialising a model under jit compiles every random initializer (slow on CPU); the padding
    and equivalence tests hold for any parameters, so they use scaled normal numbers instead:
    kernels N(0, 1/fan_in), biases N(0, 0.1); MCB's sketches as its init draws them (hashes in
    [0, mm_dim) of the tiny config, signs +-1).
    """
    shapes = jax.eval_shape(lambda: module.init(
        {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}, *args, **kwargs))
    rng = np.random.default_rng(seed)
    sketch_size = tiny_config().fusion_ops.mcb.mm_dim

    def fill(path, leaf):
        names = [str(getattr(k, "key", k)) for k in path]
        if names[-2].startswith("sketch_"):
            value = (rng.integers(0, sketch_size, leaf.shape) if names[-1] == "h"
                     else rng.choice([-1.0, 1.0], leaf.shape))
            return value.astype(leaf.dtype)
        fan_in = int(np.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else 0
        scale = 1.0 / np.sqrt(fan_in) if fan_in else 0.1
        return (scale * rng.standard_normal(leaf.shape)).astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)
