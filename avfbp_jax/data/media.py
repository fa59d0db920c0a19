"""Decoding media files: mono audio at a fixed rate and grayscale frames at a fixed frame rate.

Audio files (wav, flac, ogg, aiff) are read with soundfile (libsndfile); audio tracks inside video
containers (avi, mp4, mkv, ...) and all video are demuxed and decoded with PyAV, which ships its
own FFmpeg. Audio is mixed down to mono and resampled with a band-limited polyphase windowed-sinc
resampler written here in numpy (`resample`): one code path for every source, exact rational
phase arithmetic, Kaiser window with about 80 dB stopband, stopband edge at the lower Nyquist.

Every problem with an input raises MediaError whose message names the file and the problem, so
that a preprocessing run can list the file in its manifest and carry on.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

import av
import numpy as np
import soundfile as sf

# Files read with soundfile; everything else goes through PyAV.
SOUNDFILE_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif"})
# Sample rates outside this range are treated as broken headers rather than resampled.
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 384000
# Peak level below which a recording counts as silent (-60 dBFS).
SILENCE_DBFS = -60.0

# Resampler design: Kaiser-windowed sinc, `_ZERO_CROSSINGS` zero crossings each side of the
# centre, beta for ~80 dB stopband attenuation. The cutoff is placed so that the stopband starts
# at the lower of the two Nyquist frequencies (the passband ends at ~0.81 of it).
_ZERO_CROSSINGS = 24
_KAISER_BETA = 0.1102 * (80.0 - 8.7)
_CUTOFF = 1.0 / (1.0 + (80.0 - 7.95) / (14.36 * _ZERO_CROSSINGS) / 2.0)
_CHUNK = 4096


class MediaError(Exception):
    """A media file that cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def _check_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise MediaError(path, "file not found")
    if not path.is_file():
        raise MediaError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise MediaError(path, "empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise MediaError(path, "file is not readable (permission denied)")
    return path


def _check_rate(path: Path, rate: float, what: str) -> int:
    if not (math.isfinite(rate) and rate == int(rate)):
        raise MediaError(path, f"cannot resample: {what} sample rate {rate} is not an integer")
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise MediaError(
            path,
            f"cannot resample: {what} sample rate {int(rate)} Hz is outside "
            f"[{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}] Hz",
        )
    return int(rate)


def _kaiser(t: np.ndarray) -> np.ndarray:
    """Kaiser window on t in [-1, 1] (zero outside)."""
    inside = np.abs(t) <= 1.0
    arg = np.sqrt(np.clip(1.0 - t * t, 0.0, 1.0))
    return np.where(inside, np.i0(_KAISER_BETA * arg) / np.i0(_KAISER_BETA), 0.0)


def resample(x: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Band-limited resampling of a 1-D signal from orig_rate to new_rate (integers, Hz).

    Output sample n sits at input position n * orig_rate / new_rate (exact rational phase); its
    value is the input convolved with a Kaiser-windowed sinc low-pass whose stopband starts at
    min(orig_rate, new_rate) / 2, so tones above the new Nyquist are removed, not aliased. Each
    phase's taps are normalised to unit DC gain. Output length is ceil(len(x) * new / orig).
    """
    x = np.asarray(x, dtype=np.float64)
    if orig_rate == new_rate:
        return x.astype(np.float32)
    g = math.gcd(orig_rate, new_rate)
    up, down = new_rate // g, orig_rate // g  # output n <-> input n * down / up
    # Cutoff in cycles per input sample, and half-width of the kernel in input samples.
    fc = _CUTOFF * 0.5 * min(1.0, up / down)
    half = _ZERO_CROSSINGS / (2.0 * fc)
    taps = int(math.ceil(half))
    offsets = np.arange(-taps + 1, taps + 1)  # input samples floor(pos) + offsets
    n_out = int(math.ceil(len(x) * up / down))
    # One row of taps per distinct fractional phase p / up.
    frac = np.arange(up)[:, None] / up
    dist = frac - offsets[None, :]  # position minus tap position, in input samples
    table = 2.0 * fc * np.sinc(2.0 * fc * dist) * _kaiser(dist / half)
    table /= table.sum(axis=1, keepdims=True)
    padded = np.concatenate([np.zeros(taps), x, np.zeros(taps + 1)])
    out = np.empty(n_out, dtype=np.float32)
    for start in range(0, n_out, _CHUNK):
        n = np.arange(start, min(start + _CHUNK, n_out), dtype=np.int64)
        base, phase = np.divmod(n * down, up)
        idx = base[:, None] + offsets[None, :] + taps
        out[start : start + len(n)] = np.einsum("ij,ij->i", padded[idx], table[phase])
    return out


def _wav_data_problem(path: Path) -> str | None:
    """Problem with a RIFF/WAVE file's chunk layout that libsndfile silently tolerates."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        header = f.read(12)
        if len(header) < 12 or header[:4] not in (b"RIFF", b"RIFX") or header[8:12] != b"WAVE":
            return None  # not plain RIFF/WAVE (e.g. RF64): leave it to libsndfile
        fmt = "<I" if header[:4] == b"RIFF" else ">I"
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk_id, chunk = f.read(4), struct.unpack(fmt, f.read(4))[0]
            if chunk_id == b"data":
                if chunk in (0, 0xFFFFFFFF):
                    return None  # size left open by a streaming writer
                if pos + 8 + chunk > size:
                    return (
                        f"truncated: data chunk declares {chunk} bytes but only "
                        f"{size - pos - 8} are present"
                    )
                return None
            pos += 8 + chunk + (chunk & 1)
    return "no data chunk found"


def _read_soundfile(path: Path) -> tuple[np.ndarray, float]:
    if path.suffix.lower() == ".wav":
        problem = _wav_data_problem(path)
        if problem:
            raise MediaError(path, problem)
    try:
        with sf.SoundFile(str(path)) as f:
            declared, rate = f.frames, f.samplerate
            data = f.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise MediaError(path, f"unreadable or corrupt audio ({e})") from e
    if declared > 0 and data.shape[0] < declared:
        raise MediaError(path, f"truncated: header declares {declared} frames, read {len(data)}")
    return data.mean(axis=1), float(rate)


_PCM_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0, "s64": 2.0**63}


def _audio_frame_to_array(frame: av.AudioFrame) -> np.ndarray:
    """[channels, samples] float32 in [-1, 1] from any PyAV audio frame format."""
    a = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if not frame.format.is_planar:
        a = a.reshape(-1, channels).T
    name = frame.format.name.rstrip("p")
    if name in ("flt", "dbl"):
        return a.astype(np.float32)
    if name == "u8":
        return (a.astype(np.float32) - 128.0) / 128.0
    return (a.astype(np.float64) / _PCM_SCALE[name]).astype(np.float32)


def _declared_seconds(container: av.container.InputContainer, stream: av.stream.Stream) -> float:
    """Duration a stream's headers promise (the longest of the stream's own duration and, for
    video, its frame count; else the container's), 0 if nothing is declared."""
    declared = float(stream.duration * stream.time_base) if stream.duration else 0.0
    if stream.type == "video" and stream.frames and stream.average_rate:
        declared = max(declared, stream.frames / float(stream.average_rate))
    if not declared and container.duration:
        declared = container.duration / av.time_base
    return declared


def _read_container_audio(path: Path) -> tuple[np.ndarray, float]:
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise MediaError(path, "no audio stream")
            stream = container.streams.audio[0]
            declared = _declared_seconds(container, stream)
            chunks, rates = [], set()
            for frame in container.decode(stream):
                rates.add(frame.sample_rate)
                chunks.append(_audio_frame_to_array(frame).mean(axis=0))
    except av.FFmpegError as e:
        raise MediaError(path, f"unreadable or corrupt media ({e})") from e
    if not chunks:
        raise MediaError(path, "audio stream has no decodable samples")
    if len(rates) > 1:
        raise MediaError(path, f"sample rate changes within the stream: {sorted(rates)}")
    audio, rate = np.concatenate(chunks), rates.pop()
    decoded = len(audio) / rate
    if decoded < 0.9 * declared - 0.1:
        raise MediaError(
            path, f"truncated: audio stream declares {declared:.2f}s, decoded {decoded:.2f}s"
        )
    return audio, float(rate)


def read_audio(
    path: str | os.PathLike,
    sample_rate: int = 16000,
    *,
    silence_dbfs: float = SILENCE_DBFS,
) -> np.ndarray:
    """Mono float32 waveform of `path` at `sample_rate` Hz.

    Raises MediaError if the file is missing, empty, unreadable, corrupt, truncated, has no audio
    stream, has a sample rate that cannot be resampled, or is silent (peak below silence_dbfs).
    """
    path = _check_file(path)
    if path.suffix.lower() in SOUNDFILE_EXTENSIONS:
        audio, rate = _read_soundfile(path)
    else:
        audio, rate = _read_container_audio(path)
    rate = _check_rate(path, rate, "source")
    sample_rate = _check_rate(path, sample_rate, "target")
    if audio.size == 0:
        raise MediaError(path, "no audio samples")
    if not np.all(np.isfinite(audio)):
        raise MediaError(path, "audio contains NaN or infinite samples")
    peak = float(np.max(np.abs(audio)))
    if peak < 10.0 ** (silence_dbfs / 20.0):
        level = "all-zero" if peak == 0.0 else f"peak {20 * math.log10(peak):.1f} dBFS"
        raise MediaError(path, f"silent audio ({level}, threshold {silence_dbfs:.0f} dBFS)")
    return resample(audio, rate, sample_rate)


def read_video(
    path: str | os.PathLike,
    fps: float = 10.0,
    *,
    start: float = 0.0,
    end: float | None = None,
) -> tuple[np.ndarray, float]:
    """Grayscale frames of `path` sampled at `fps` by timestamp, and the covered duration (s).

    Output frame k shows the video at time start + k / fps (the last decoded frame whose
    timestamp is at or before it), for every k with k / fps < duration, where duration is
    min(end, video end) - start. start/end (seconds) select a segment, e.g. one utterance of a
    long dialog recording. Returns (uint8 [T, H, W], duration_s).
    """
    path = _check_file(path)
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(path, "no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            origin = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
            if start > 0:
                container.seek(int((start + origin) / stream.time_base), stream=stream)
            times, images = [], []
            index = 0
            for frame in container.decode(stream):
                t = frame.time - origin if frame.time is not None else index / float(stream.rate)
                index += 1
                if end is not None and t >= end:
                    break
                if images and t < start:  # keep only the last frame before start
                    images.clear()
                    times.clear()
                times.append(t)
                images.append(frame.to_ndarray(format="gray"))
            step = 1.0 / float(stream.average_rate) if stream.average_rate else 0.0
            declared = _declared_seconds(container, stream)
    except av.FFmpegError as e:
        raise MediaError(path, f"unreadable or corrupt media ({e})") from e
    if not images:
        raise MediaError(path, "video stream has no decodable frames in the requested range")
    video_end = times[-1] + step
    if (end is None or end > video_end) and video_end < 0.9 * declared - 2 * step:
        raise MediaError(
            path, f"truncated: video stream declares {declared:.2f}s, decoded {video_end:.2f}s"
        )
    stop = video_end if end is None else min(end, video_end)
    duration = stop - start
    if duration <= 0:
        raise MediaError(path, f"requested start {start:.3f}s is past the video end")
    count = max(1, math.ceil(duration * fps - 1e-6))
    targets = start + np.arange(count) / fps
    pick = np.searchsorted(np.asarray(times), targets + 1e-6, side="right") - 1
    pick = np.clip(pick, 0, len(images) - 1)
    return np.stack([images[i] for i in pick]).astype(np.uint8), float(duration)
