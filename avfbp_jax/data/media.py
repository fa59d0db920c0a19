"""Decoding media files: mono audio at a fixed rate and grayscale frames at a fixed frame rate.

Audio files (wav, flac, ogg, aiff) are read with soundfile (libsndfile), mixed down to mono (the
mean of the channels) and resampled with soxr (`resample`); audio tracks inside video containers
(avi, mp4, mkv, ...) are demuxed, decoded, mixed down and resampled by PyAV's own resampler
(FFmpeg's libswresample, set up for the same response: `CONTAINER_RESAMPLER`); all video is
decoded with PyAV, which ships its own FFmpeg.

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
import soxr

# Files read with soundfile; everything else goes through PyAV.
SOUNDFILE_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif"})
# Sample rates outside this range are treated as broken headers rather than resampled.
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 384000
# Peak level below which a recording counts as silent (-60 dBFS).
SILENCE_DBFS = -60.0

# soxr's "HQ" recipe: 20-bit precision (about 120 dB of stopband rejection, from the lower
# Nyquist frequency up), passband flat to 91.3% of it, linear phase.
SOXR_QUALITY = "HQ"
# libswresample options for container audio: a unit-gain downmix (rematrix_maxval 1: stereo ->
# the mean of the channels, as for soundfile; FFmpeg's default mixes each channel at -3 dB,
# which clips), and a longer filter whose -6 dB point sits at 95% of the lower Nyquist frequency
# (FFmpeg's default, 32 taps at 97%, lets a tone just above the new Nyquist frequency alias back
# at only -60 dB); measured: flat (-0.01 dB) to 7.3 kHz and below -90 dB from 8.2 kHz at 16 kHz.
CONTAINER_RESAMPLER = {"rematrix_maxval": "1.0", "filter_size": "128", "cutoff": "0.95"}


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


def resample(x: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Band-limited resampling of a 1-D signal from orig_rate to new_rate (integers, Hz) with
    soxr (SOXR_QUALITY); float32 out, round(len(x) * new_rate / orig_rate) samples, aligned with
    the input (soxr removes its filter delay)."""
    if orig_rate == new_rate:
        return np.asarray(x, np.float32)
    return soxr.resample(np.asarray(x, np.float64), orig_rate, new_rate,
                         quality=SOXR_QUALITY).astype(np.float32)


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


def _declared_seconds(container: av.container.InputContainer, stream: av.stream.Stream) -> float:
    """Duration a stream's headers promise (the longest of the stream's own duration and, for
    video, its frame count; else the container's), 0 if nothing is declared."""
    declared = float(stream.duration * stream.time_base) if stream.duration else 0.0
    if stream.type == "video" and stream.frames and stream.average_rate:
        declared = max(declared, stream.frames / float(stream.average_rate))
    if not declared and container.duration:
        declared = container.duration / av.time_base
    return declared


def _read_container_audio(path: Path, sample_rate: int) -> np.ndarray:
    """The first audio stream, decoded and converted by PyAV to mono float32 at sample_rate."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate,
                                  options=CONTAINER_RESAMPLER)
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise MediaError(path, "no audio stream")
            stream = container.streams.audio[0]
            declared = _declared_seconds(container, stream)
            chunks, rate = [], None
            for frame in container.decode(stream):
                if rate is None:
                    rate = _check_rate(path, frame.sample_rate, "source")
                elif frame.sample_rate != rate:
                    raise MediaError(path, "sample rate changes within the stream: "
                                           f"{sorted({rate, frame.sample_rate})}")
                chunks += [out.to_ndarray()[0] for out in resampler.resample(frame)]
            chunks += [out.to_ndarray()[0] for out in resampler.resample(None)]
    except av.FFmpegError as e:
        raise MediaError(path, f"unreadable or corrupt media ({e})") from e
    if rate is None:
        raise MediaError(path, "audio stream has no decodable samples")
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    decoded = len(audio) / sample_rate
    if decoded < 0.9 * declared - 0.1:
        raise MediaError(
            path, f"truncated: audio stream declares {declared:.2f}s, decoded {decoded:.2f}s"
        )
    return audio


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
    sample_rate = _check_rate(path, sample_rate, "target")
    if path.suffix.lower() in SOUNDFILE_EXTENSIONS:
        audio, rate = _read_soundfile(path)
        audio = resample(audio, _check_rate(path, rate, "source"), sample_rate)
    else:
        audio = _read_container_audio(path, sample_rate)
    if audio.size == 0:
        raise MediaError(path, "no audio samples")
    if not np.all(np.isfinite(audio)):
        raise MediaError(path, "audio contains NaN or infinite samples")
    peak = float(np.max(np.abs(audio)))
    if peak < 10.0 ** (silence_dbfs / 20.0):
        level = "all-zero" if peak == 0.0 else f"peak {20 * math.log10(peak):.1f} dBFS"
        raise MediaError(path, f"silent audio ({level}, threshold {silence_dbfs:.0f} dBFS)")
    return audio


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
