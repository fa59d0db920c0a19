"""Audio stream (design brief section 2.2): spectrogram -> AlexNet-style FCN + LRN -> attention.

The convolution stack follows AlexNet without its fully connected layers: conv1 has stride 4 and
pads audio.conv1_pad (0 in Caffe's AlexNet, 2 in torchvision's), later convolutions pad
kernel // 2 (AlexNet's 2, 1, 1, 1), max-pools are unpadded.
Time is axis 1 and frequency axis 2 of the [B, T, F, C] maps. The frequency axis is never padded
(always n_bins), so only the time axis carries a mask: its valid length is propagated through
every stride and pool, and steps past it are zeroed after every layer, so that valid outputs do
not depend on how far the waveform was padded.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from avfbp_jax.models.config import AUDIO_ATTENTIONS
from avfbp_jax.models.frontend import log_spectrogram
from avfbp_jax.ops.lrn import local_response_norm
from avfbp_jax.ops.masking import AttendedSequence, conv_output_length, zero_invalid


def scaled_channels(channels: tuple[int, ...], width: float) -> tuple[int, ...]:
    """Channel counts times the width multiplier (at least 1 each)."""
    return tuple(max(1, round(c * width)) for c in channels)


class AudioFCN(nn.Module):
    """AlexNet-style fully convolutional stack over a [B, T, F] spectrogram with time lengths."""

    config: ml_collections.ConfigDict  # the model config's `audio` block
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, spec: jax.Array, spec_len: jax.Array) -> tuple[jax.Array, jax.Array]:
        cfg = self.config
        x = spec[..., None].astype(self.dtype)
        length = spec_len
        for i, (channels, kernel) in enumerate(
            zip(scaled_channels(cfg.channels, cfg.width), cfg.kernels, strict=True)
        ):
            stride = cfg.conv1_stride if i == 0 else 1
            pad = cfg.conv1_pad if i == 0 else kernel // 2
            x = nn.Conv(channels, (kernel, kernel), strides=(stride, stride),
                        padding=((pad, pad), (pad, pad)), dtype=self.dtype, name=f"conv{i + 1}")(x)
            x = nn.relu(x)
            length = conv_output_length(length, kernel, stride, pad)
            if i in cfg.lrn_after:
                x = local_response_norm(x, cfg.lrn_size, cfg.lrn_alpha, cfg.lrn_beta, cfg.lrn_k)
            if i in cfg.pool_after:
                window, stride = cfg.pool_window, cfg.pool_stride
                x = nn.max_pool(x, (window, window), strides=(stride, stride), padding="VALID")
                length = conv_output_length(length, window, stride, "VALID")
            x = zero_invalid(x, length)
        return x, length


class AudioStream(nn.Module):
    """Waveform [B, S] + valid samples [B] -> AttendedSequence over the FCN's time steps.

    "1d" attention (default): frequency is collapsed by the mean over the (never padded)
    frequency rows, each step's features are layer-normalised (audio.layer_norm; without it the
    unnormalised FCN's features grow with depth and saturate the tanh below, so nothing trains),
    and each time step t is scored by e_t = u^T tanh(W h_t + b); the sequence's
    scores are lambda * e_t, normalised by a masked softmax. "2d": every (time, frequency) cell of
    the final map is a step, scored the same way (the predecessor FCN's attention).
    """

    config: ml_collections.ConfigDict  # the whole model config (uses `frontend` and `audio`)
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, audio: jax.Array, audio_len: jax.Array) -> AttendedSequence:
        cfg = self.config.audio
        spec, spec_len = log_spectrogram(audio, audio_len, self.config.frontend)
        h, length = AudioFCN(cfg, dtype=self.dtype, name="fcn")(spec, spec_len)  # [B, T, F, C]
        batch, steps, freq, channels = h.shape
        time = jnp.broadcast_to(jnp.arange(steps, dtype=jnp.int32), (batch, steps))
        mask = time < length[:, None]
        if cfg.attention == "1d":
            h = jnp.mean(h, axis=2)  # [B, T, C]
        elif cfg.attention == "2d":
            h = h.reshape(batch, steps * freq, channels)
            time = jnp.repeat(time, freq, axis=1)
            mask = jnp.repeat(mask, freq, axis=1)
        else:
            raise ValueError(f"audio.attention must be one of {AUDIO_ATTENTIONS}, "
                             f"got {cfg.attention!r}")
        if cfg.layer_norm:
            h = nn.LayerNorm(dtype=self.dtype, name="norm")(h)
        e = nn.Dense(cfg.attention_dim, dtype=self.dtype, name="attention_hidden")(h)
        e = nn.Dense(1, use_bias=False, dtype=self.dtype, name="attention_score")(jnp.tanh(e))
        scores = cfg.attention_lambda * e[..., 0].astype(jnp.float32)
        cells = freq if cfg.attention == "2d" else 1
        return AttendedSequence(h, scores, mask, time, length, "softmax", cells)

