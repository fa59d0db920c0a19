"""Log-spectrogram front end: against a numpy reference, normalised over valid frames only."""

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from avfbp_jax.models.config import model_config
from avfbp_jax.models.frontend import log_spectrogram, num_frames, waveform
from avfbp_jax.ops.device_rows import DATA_AXIS, use_mesh
from tests.hlo import collectives


def _reference(wave, cfg):
    """numpy: periodic Hamming frames, |rfft|^2 of the lowest bins, log with a floor."""
    win, hop = cfg.win_length, cfg.hop_length
    count = (len(wave) - win) // hop + 1
    window = np.hamming(win + 1)[:-1]
    frames = np.stack([wave[t * hop: t * hop + win] * window for t in range(count)])
    power = np.abs(np.fft.rfft(frames, n=cfg.n_fft, axis=-1)[:, : cfg.n_bins]) ** 2
    return np.log(np.maximum(power, cfg.log_floor))


def test_matches_numpy_reference_and_ignores_padding():
    cfg = model_config().frontend
    cfg.normalize = False
    rng = np.random.default_rng(0)
    wave = rng.standard_normal(4000).astype(np.float32) * 0.1
    audio = np.zeros((2, 6000), np.float32)
    audio[0, :4000] = wave
    audio[0, 4000:] = 5.0  # garbage past audio_len must be ignored
    audio[1] = rng.standard_normal(6000)
    spec, spec_len = jax.jit(lambda a, n: log_spectrogram(a, n, cfg))(audio, np.array([4000, 6000]))
    assert spec.shape == (2, (6000 - 640) // 160 + 1, 200)
    np.testing.assert_array_equal(spec_len, [(4000 - 640) // 160 + 1, (6000 - 640) // 160 + 1])
    ref = _reference(wave.astype(np.float64), cfg)
    np.testing.assert_allclose(spec[0, : len(ref)], ref, atol=2e-3, rtol=1e-3)
    assert np.all(np.asarray(spec)[0, len(ref):] == 0)


def test_normalised_per_bin_over_valid_frames():
    cfg = model_config().frontend
    rng = np.random.default_rng(1)
    audio = rng.standard_normal((2, 8000)).astype(np.float32)
    audio_len = np.array([5000, 8000])
    spec, spec_len = log_spectrogram(audio, audio_len, cfg)
    valid = np.asarray(spec)[0, : int(spec_len[0])]
    np.testing.assert_allclose(valid.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(valid.std(0), 1.0, atol=1e-3)
    # Padding further (with garbage) changes nothing in the valid frames.
    longer = np.concatenate([audio, rng.standard_normal((2, 3000)).astype(np.float32)], 1)
    spec2, spec_len2 = log_spectrogram(longer, audio_len, cfg)
    np.testing.assert_array_equal(spec_len2, spec_len)
    np.testing.assert_allclose(spec2[0, : int(spec_len[0])], valid, atol=1e-5)


def test_short_audio():
    cfg = model_config().frontend
    np.testing.assert_array_equal(num_frames(np.array([0, 639, 640, 800, 801]), 640, 160),
                                  [0, 0, 1, 2, 2])
    spec, spec_len = log_spectrogram(np.ones((1, 1000), np.float32), np.array([100]), cfg)
    assert int(spec_len[0]) == 0 and np.all(np.asarray(spec) == 0)
    with pytest.raises(ValueError, match="fewer than one 640-sample window"):
        log_spectrogram(np.ones((1, 600), np.float32), np.array([600]), cfg)


def test_int16_pcm_is_scaled_on_device():
    """The loader sends int16 PCM; on device it becomes x / 32767 (to within one float32 ulp:
    XLA divides by multiplying with the reciprocal), and the spectrogram follows."""
    pcm = np.arange(-32768, 32768, dtype=np.int16)
    np.testing.assert_allclose(jax.jit(waveform)(pcm), pcm.astype(np.float64) / 32767,
                               rtol=1.2e-7, atol=0)
    cfg = model_config().frontend
    audio = np.random.default_rng(2).integers(-3000, 3000, (2, 3200)).astype(np.int16)
    lengths = np.array([3200, 2500])
    spec_pcm, len_pcm = log_spectrogram(audio, lengths, cfg)
    spec_float, len_float = log_spectrogram(audio.astype(np.float32) / 32767, lengths, cfg)
    np.testing.assert_array_equal(len_pcm, len_float)
    np.testing.assert_allclose(spec_pcm, spec_float, atol=1e-4)
    assert waveform(np.zeros(3, np.float32)).dtype == np.float32


def test_sharded_batch_runs_the_fft_on_each_device_rows():
    """A batch sharded over 8 devices: each device transforms its own rows (the compiled
    function has no collective at all; XLA alone gathered the frames of the whole batch onto
    every device for the FFT), with the unsharded result."""
    cfg = model_config().frontend
    rng = np.random.default_rng(2)
    audio = rng.standard_normal((16, 4000)).astype(np.float32) * 0.1
    lengths = rng.integers(1000, 4001, 16)
    mesh = Mesh(np.asarray(jax.devices()), (DATA_AXIS,))
    rows = NamedSharding(mesh, P(DATA_AXIS))
    f = jax.jit(lambda a, n: log_spectrogram(a, n, cfg), in_shardings=(rows, rows))
    with use_mesh(mesh):
        text = f.lower(audio, lengths).compile().as_text()
        spec, spec_len = f(audio, lengths)
    assert not collectives(text)
    # The same computation per row (equal here, bit for bit; eager differs by 2e-3 in bins
    # near the log floor, which the normalisation magnifies).
    want, want_len = jax.jit(lambda a, n: log_spectrogram(a, n, cfg))(audio, lengths)
    np.testing.assert_array_equal(spec_len, want_len)
    np.testing.assert_allclose(spec, want, rtol=1e-6, atol=1e-6)
