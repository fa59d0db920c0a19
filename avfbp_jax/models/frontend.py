"""Audio front end computed on device (design brief section 2.1): log power spectrogram.

Frames are not centre-padded: frame t covers samples [t * hop, t * hop + win), and it is valid
only when it lies entirely inside the recording's valid samples. Everything a valid frame sees is
therefore independent of how far the waveform was padded.
"""

import jax
import jax.numpy as jnp
import ml_collections

from avfbp_jax.data.cache import PCM_SCALE
from avfbp_jax.ops.device_rows import on_device_rows
from avfbp_jax.ops.masking import length_mask, masked_mean, zero_invalid


def num_frames(num_samples: jax.Array | int, win_length: int, hop_length: int) -> jax.Array:
    """Number of whole analysis frames in `num_samples` samples (0 if shorter than a window)."""
    n = jnp.asarray(num_samples, jnp.int32)
    return jnp.where(n >= win_length, (n - win_length) // hop_length + 1, 0).astype(jnp.int32)


def hamming(win_length: int) -> jax.Array:
    """Periodic Hamming window (scipy.signal.get_window("hamming"), librosa)."""
    n = jnp.arange(win_length, dtype=jnp.float32)
    return 0.54 - 0.46 * jnp.cos(2.0 * jnp.pi * n / win_length)


def waveform(audio: jax.Array) -> jax.Array:
    """float32 waveform in [-1, 1]: int16 PCM (what the loader sends) is scaled on device."""
    if jnp.issubdtype(audio.dtype, jnp.integer):
        return audio.astype(jnp.float32) / PCM_SCALE
    return audio.astype(jnp.float32)


def log_spectrogram(
    audio: jax.Array, audio_len: jax.Array, cfg: ml_collections.ConfigDict
) -> tuple[jax.Array, jax.Array]:
    """Log power spectrogram of a padded batch.

    Args:
      audio: [B, S] waveforms, int16 PCM or float in [-1, 1] (see `waveform`); samples at or
        past audio_len are ignored.
      audio_len: int [B] valid samples.
      cfg: the `frontend` block of the model config.

    Returns:
      spec: float32 [B, F, n_bins] (time, frequency), per-utterance normalised over valid frames
        when cfg.normalize; frames >= spec_len are zero.
      spec_len: int32 [B] valid frames.
    """
    win, hop = cfg.win_length, cfg.hop_length
    total = audio.shape[1]
    if total < win:
        raise ValueError(f"audio has {total} samples, fewer than one {win}-sample window")
    audio = zero_invalid(waveform(audio), audio_len)
    frames_total = (total - win) // hop + 1
    index = jnp.arange(frames_total)[:, None] * hop + jnp.arange(win)[None, :]
    frames = audio[:, index] * hamming(win)  # [B, F, win]

    def log_power(frames, *, row_offset):  # each row on its own: row_offset is not needed
        spectrum = jnp.fft.rfft(frames, n=cfg.n_fft, axis=-1)[..., : cfg.n_bins]
        power = jnp.square(spectrum.real) + jnp.square(spectrum.imag)
        return jnp.log(jnp.maximum(power, cfg.log_floor))

    # XLA partitions a batch-sharded FFT by gathering the batch onto every device first.
    spec = on_device_rows(log_power, (frames,), caller="log_spectrogram")
    spec_len = num_frames(audio_len, win, hop)
    if cfg.normalize:
        spec = normalize_utterance(spec, spec_len)
    return zero_invalid(spec, spec_len), spec_len


def normalize_utterance(spec: jax.Array, spec_len: jax.Array, eps: float = 1e-5) -> jax.Array:
    """Per-utterance, per-frequency-bin mean/variance normalisation over valid frames only."""
    mask = length_mask(spec_len, spec.shape[1])[:, :, None]
    mean = masked_mean(spec, mask, axis=1)[:, None, :]
    var = masked_mean(jnp.square(spec - mean), mask, axis=1)[:, None, :]
    return (spec - mean) * jax.lax.rsqrt(var + eps)
