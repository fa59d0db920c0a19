"""Video stream (design brief section 2.3): per-frame encoder -> frame self-attention.

Frames are encoded one by one, so a padded or face-less frame cannot affect another frame; the
attention then ignores every frame outside `frame_mask`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from avfbp_jax.models import fer
from avfbp_jax.models.config import VIDEO_ATTENTIONS, VIDEO_ENCODERS
from avfbp_jax.ops.masking import AttendedSequence, length_mask


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max-pool, stride 2, VALID, over [N, H, W, C]: the values of nn.max_pool(x, (2, 2)).

    Written as a reshape and a max so that its gradient is an elementwise select rather than
    XLA's select-and-scatter, which made the face CNN's backward pass 1.5-1.9x slower on CPU.
    """
    n, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2]
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class FaceCNN(nn.Module):
    """Small trainable CNN over grayscale face crops: uint8 [..., H, W] -> [..., feature_dim].

    (3x3 conv, ReLU, 2x2 max-pool) per entry of `channels`, flatten, dense, ReLU. Flattening
    (not a global average pool) keeps where on the face a feature is: a mouth corner turned up
    and a brow turned down look alike locally.
    """

    channels: tuple[int, ...] = (32, 64, 128)
    feature_dim: int = 128
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, frames: jax.Array) -> jax.Array:
        lead, (height, width) = frames.shape[:-2], frames.shape[-2:]
        x = frames.reshape(-1, height, width, 1).astype(self.dtype) * (2.0 / 255.0) - 1.0
        for i, c in enumerate(self.channels):
            x = nn.Conv(c, (3, 3), padding="SAME", dtype=self.dtype, name=f"conv{i + 1}")(x)
            x = max_pool_2x2(nn.relu(x))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(self.feature_dim, dtype=self.dtype, name="project")(x))
        return x.reshape(*lead, self.feature_dim)


class VideoStream(nn.Module):
    """Frames [B, T, H, W] uint8 (or [B, T, D] features) -> AttendedSequence over frames.

    Encoders: "cnn" a trainable FaceCNN; "fer" the frozen FER port (128-d features per 64x64
    crop); "identity" precomputed features.

    Each frame's features are layer-normalised (video.layer_norm), so both streams reach the
    fusion at the same scale. Each frame gets the score q^T f_i + b. "sigmoid" (frame attention
    networks): beta_i = sigmoid(score), weights beta_i / sum_j beta_j over valid frames;
    "softmax": a masked softmax of the scores. Valid frames are those inside frame_len with
    frame_mask True.
    """

    config: ml_collections.ConfigDict  # the model config's `video` block
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(
        self, frames: jax.Array, frame_len: jax.Array, frame_mask: jax.Array
    ) -> AttendedSequence:
        cfg = self.config
        if cfg.attention not in VIDEO_ATTENTIONS:
            raise ValueError(
                f"video.attention must be one of {VIDEO_ATTENTIONS}, got {cfg.attention!r}")
        if cfg.encoder == "cnn":
            if frames.ndim != 4:
                raise ValueError(
                    f"video.encoder='cnn' needs frames [B, T, H, W], got {frames.shape}")
            encoder = FaceCNN(tuple(cfg.cnn_channels), cfg.feature_dim, self.dtype, name="encoder")
            f = encoder(frames)
        elif cfg.encoder == "identity":
            if frames.ndim != 3:
                raise ValueError(
                    f"video.encoder='identity' needs features [B, T, D], got {frames.shape}")
            f = frames.astype(self.dtype)
        elif cfg.encoder == "fer":
            if frames.ndim != 4 or frames.shape[-2:] != (fer.INPUT_SIZE, fer.INPUT_SIZE):
                raise ValueError(f"video.encoder='fer' needs 64x64 crops [B, T, 64, 64], "
                                 f"got {frames.shape}")
            # Frozen (its outputs carry no gradient); load_pretrained fills its parameters.
            f = fer.FerEncoder(output="features", name="encoder")(frames).astype(self.dtype)
        else:
            raise ValueError(f"video.encoder must be one of {VIDEO_ENCODERS}, got {cfg.encoder!r}")
        if cfg.layer_norm:
            f = nn.LayerNorm(dtype=self.dtype, name="norm")(f)
        batch, steps = f.shape[:2]
        scores = nn.Dense(1, dtype=self.dtype, name="attention")(f)[..., 0].astype(jnp.float32)
        mask = frame_mask.astype(bool) & length_mask(frame_len, steps)
        time = jnp.broadcast_to(jnp.arange(steps, dtype=jnp.int32), (batch, steps))
        return AttendedSequence(f, scores, mask, time, frame_len.astype(jnp.int32), cfg.attention)
