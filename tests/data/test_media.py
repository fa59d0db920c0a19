"""Decoding real files written to tmp_path: wav/flac via soundfile, containers via PyAV."""

import fractions

import av
import cv2
import numpy as np
import pytest
import soundfile as sf

from avfbp_jax.data.media import MediaError, read_audio, read_video, resample


def _sine(freq, rate, seconds, amp=0.5):
    return amp * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)


def _write_container(path, codec, rate, seconds=2.0, with_video=True):
    """A container with a stereo 440 Hz tone (left 0.5, right 0.3) and optionally 10 fps video."""
    n = int(rate * seconds)
    tone = np.sin(2 * np.pi * 440 * np.arange(n) / rate)
    stereo = np.stack([0.5 * tone, 0.3 * tone]).astype(np.float32)
    with av.open(str(path), "w") as out:
        if with_video:
            video = out.add_stream("mpeg4", rate=10)
            video.width = video.height = 32
            video.pix_fmt = "yuv420p"
        audio = out.add_stream(codec, rate=rate)
        audio.layout = "stereo"
        fmt = "fltp" if codec == "aac" else "s16"
        if with_video:
            for i in range(int(seconds * 10)):
                frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 8 * i, np.uint8), "rgb24")
                out.mux(video.encode(frame))
        for s in range(0, n, 1024):
            block = stereo[:, s : s + 1024]
            if fmt == "s16":
                block = (block.T.reshape(1, -1) * 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(block, format=fmt, layout="stereo")
            frame.sample_rate, frame.pts = rate, s
            frame.time_base = fractions.Fraction(1, rate)
            out.mux(audio.encode(frame))
        out.mux(audio.encode(None))
        if with_video:
            out.mux(video.encode(None))


def _write_avi(path, frames, fps):
    writer = cv2.VideoWriter(
        str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"MJPG"), fps, frames.shape[:0:-1], False
    )
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()


# ---------------------------------------------------------------- resampler


@pytest.mark.parametrize("orig", [8000, 22050, 44100, 48000])
def test_resampled_sine_keeps_frequency_and_amplitude(orig):
    y = resample(_sine(440.0, orig, 1.0), orig, 16000)
    assert y.dtype == np.float32 and len(y) == 16000
    expected = _sine(440.0, 16000, 1.0)
    # Exact phase: the output equals the ideal 16 kHz sine away from the zero-padded edges.
    np.testing.assert_allclose(y[400:-400], expected[400:-400], atol=2e-4)
    # 3 kHz keeps amplitude too (inside the passband of every ratio here).
    y = resample(_sine(3000.0, orig, 1.0), orig, 16000)
    spectrum = np.abs(np.fft.rfft(y[400:-400] * np.hanning(len(y) - 800)))
    peak = np.fft.rfftfreq(len(y) - 800, 1 / 16000)[np.argmax(spectrum)]
    assert abs(peak - 3000.0) < 2.0
    assert np.sqrt(2 * np.mean(y[400:-400] ** 2)) == pytest.approx(0.5, rel=2e-3)


@pytest.mark.parametrize("freq", [9000.0, 10000.0, 15000.0])
def test_resampler_removes_tones_above_new_nyquist(freq):
    # A tone above 8 kHz would alias to 16000 - freq; the low-pass must remove it. soxr's "HQ"
    # recipe documents 20-bit precision, i.e. about 120 dB of rejection from the new Nyquist
    # frequency up (the numpy resampler it replaced was designed for 80 dB and tested at 60).
    y = resample(_sine(freq, 44100, 0.5), 44100, 16000)
    assert len(y) == 8000
    assert np.sqrt(np.mean(y[400:-400] ** 2)) < 0.5 * 10 ** (-120 / 20)


def test_resample_length_and_identity():
    x = np.random.default_rng(0).standard_normal(1001)
    assert len(resample(x, 44100, 16000)) == round(1001 * 16000 / 44100)  # soxr's length
    np.testing.assert_array_equal(resample(x, 16000, 16000), x.astype(np.float32))


# ---------------------------------------------------------------- read_audio


def test_read_wav_pcm16_and_stereo_downmix(tmp_path):
    x = _sine(440.0, 16000, 0.5)
    sf.write(tmp_path / "mono.wav", x, 16000, subtype="PCM_16")
    y = read_audio(tmp_path / "mono.wav")
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(y, x, atol=1.0 / 32768)
    sf.write(tmp_path / "stereo.wav", np.stack([x, 0.5 * x], 1), 16000, subtype="PCM_16")
    np.testing.assert_allclose(read_audio(tmp_path / "stereo.wav"), 0.75 * x, atol=1.0 / 32768)


def test_read_flac_44k_is_resampled(tmp_path):
    sf.write(tmp_path / "a.flac", _sine(440.0, 44100, 1.0), 44100)
    y = read_audio(tmp_path / "a.flac")
    assert len(y) == 16000
    np.testing.assert_allclose(y[400:-400], _sine(440.0, 16000, 1.0)[400:-400], atol=5e-4)


def test_audio_track_inside_avi_pcm(tmp_path):
    path = tmp_path / "clip.avi"
    _write_container(path, "pcm_s16le", 48000)
    y = read_audio(path)
    assert len(y) == 32000
    expected = 0.4 * np.sin(2 * np.pi * 440 * np.arange(32000) / 16000)  # mean of 0.5 and 0.3
    np.testing.assert_allclose(y[400:-400], expected[400:-400], atol=1e-3)
    frames, duration = read_video(path)
    assert frames.shape == (20, 32, 32) and duration == pytest.approx(2.0)


def test_audio_track_inside_mkv_aac(tmp_path):
    path = tmp_path / "clip.mkv"
    _write_container(path, "aac", 22050)
    y = read_audio(path)
    assert abs(len(y) / 16000 - 2.0) < 0.1  # AAC adds encoder priming/padding samples
    spectrum = np.abs(np.fft.rfft(y[2000:30000]))
    assert np.fft.rfftfreq(28000, 1 / 16000)[np.argmax(spectrum)] == pytest.approx(440, abs=1)
    assert np.sqrt(2 * np.mean(y[2000:30000] ** 2)) == pytest.approx(0.4, rel=0.05)


# ---------------------------------------------------------------- read_video


def test_read_video_samples_frames_by_timestamp(tmp_path):
    # 25 fps source whose frame i has grey level 8 * i; sampling at 10 fps takes frame
    # floor(k * 2.5) for output frame k.
    src = np.stack([np.full((48, 64), 8 * i, np.uint8) for i in range(30)])
    _write_avi(tmp_path / "v.avi", src, 25.0)
    frames, duration = read_video(tmp_path / "v.avi", fps=10.0)
    assert frames.dtype == np.uint8 and frames.shape == (12, 48, 64)
    assert duration == pytest.approx(1.2)
    expected = 8 * np.floor(np.arange(12) * 2.5)
    np.testing.assert_allclose(frames.mean(axis=(1, 2)), expected, atol=2)
    # A segment: start 0.4 s, end 0.8 s -> 4 frames from source frames 10, 12, 15, 17.
    frames, duration = read_video(tmp_path / "v.avi", fps=10.0, start=0.4, end=0.8)
    assert duration == pytest.approx(0.4) and len(frames) == 4
    np.testing.assert_allclose(frames.mean(axis=(1, 2)), [80, 96, 120, 136], atol=2)


# ---------------------------------------------------------------- every failure names the file


def _raises(fn, path, words):
    with pytest.raises(MediaError) as info:
        fn(path)
    message = str(info.value)
    assert path.name in message
    assert any(w in message for w in words), message


def test_missing_and_empty_files(tmp_path):
    _raises(read_audio, tmp_path / "nothere.wav", ["not found"])
    _raises(read_video, tmp_path / "nothere.avi", ["not found"])
    for name in ("empty.wav", "empty.avi"):
        (tmp_path / name).write_bytes(b"")
        _raises(read_audio, tmp_path / name, ["empty"])
    _raises(read_video, tmp_path / "empty.avi", ["empty"])


def test_corrupt_and_text_files(tmp_path):
    (tmp_path / "noise.wav").write_bytes(np.random.default_rng(0).bytes(5000))
    _raises(read_audio, tmp_path / "noise.wav", ["corrupt", "no data chunk"])
    (tmp_path / "notes.avi").write_text("this is a text file, not a video\n" * 20)
    _raises(read_video, tmp_path / "notes.avi", ["corrupt"])
    _raises(read_audio, tmp_path / "notes.avi", ["corrupt"])


def test_truncated_wav_and_container(tmp_path):
    sf.write(tmp_path / "full.wav", _sine(440.0, 16000, 1.0), 16000, subtype="PCM_16")
    data = (tmp_path / "full.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])
    _raises(read_audio, tmp_path / "cut.wav", ["truncated"])
    (tmp_path / "header.wav").write_bytes(data[:30])
    _raises(read_audio, tmp_path / "header.wav", ["corrupt", "no data chunk"])
    _write_container(tmp_path / "full.mkv", "aac", 22050)
    data = (tmp_path / "full.mkv").read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) // 2])
    _raises(read_audio, tmp_path / "cut.mkv", ["truncated"])
    _raises(read_video, tmp_path / "cut.mkv", ["truncated"])


def test_silent_and_near_silent_wav(tmp_path):
    sf.write(tmp_path / "zeros.wav", np.zeros(16000), 16000, subtype="PCM_16")
    _raises(read_audio, tmp_path / "zeros.wav", ["silent"])
    sf.write(tmp_path / "quiet.wav", _sine(440.0, 16000, 1.0, amp=1e-4), 16000, subtype="FLOAT")
    _raises(read_audio, tmp_path / "quiet.wav", ["silent"])


def test_no_audio_stream_and_no_video_stream(tmp_path):
    _write_avi(tmp_path / "mute.avi", np.zeros((5, 32, 32), np.uint8), 10.0)
    _raises(read_audio, tmp_path / "mute.avi", ["no audio stream"])
    _write_container(tmp_path / "sound.mkv", "aac", 22050, with_video=False)
    _raises(read_video, tmp_path / "sound.mkv", ["no video stream"])


def test_unresamplable_rate(tmp_path):
    sf.write(tmp_path / "slow.wav", _sine(10.0, 200, 1.0), 200, subtype="PCM_16")
    _raises(read_audio, tmp_path / "slow.wav", ["cannot resample"])
