"""The embedded synthetic audio-visual emotion corpus (`avfbp synth OUT_DIR`).

Writes real media files in the folder corpus layout: OUT_DIR/<class>/<stem>.wav (16 kHz, 16-bit
PCM mono) and OUT_DIR/<class>/<stem>.avi (grayscale Motion-JPEG in AVI at 10 fps, 128x128,
written by cv2.VideoWriter, read back by OpenCV and by PyAV/FFmpeg), plus OUT_DIR/splits.csv
(`clip,split`) and OUT_DIR/corpus.json (classes in label order, seed, counts, settings, generator
version). Clip i is generated from its own generator seeded by (seed, i): the same seed and
options give the same bytes, whatever the order or the number of worker processes, and an
interrupted run is finished by the next one with the bytes of an uninterrupted run.

Design of the emotion cues (the knobs are the `Cues` fields; `avfbp synth --audio-cue/--video-cue`
scale them):

* Every clip has a speaker identity drawn at random (base pitch 90-240 Hz, vocal-tract length,
  speaking rate, breathiness, loudness; face size, skin and hair tone, eye/brow/mouth geometry,
  resting mouth curvature and brow slant, head pose, lighting, camera noise). Identity variation
  is larger than some of the cues, so no single raw statistic gives the class away.
* The emotion is expressed only inside one contiguous segment covering a random 30-70% of the
  clip, with 0.15 s ramps; the rest of the clip is neutral. The segment is the same in audio and
  video, so attention and trunk-level pooling have something to find.
* Audio carries AROUSAL: inside the segment, happy and angry raise pitch (x1.7), widen the
  pitch accents, speed up the syllable rate (+80%), add energy (+12 dB) and flatten the spectral
  tilt (tense voice); neutral and sad are produced identically. Audio alone therefore separates
  {happy, angry} from {neutral, sad} but is at chance within each pair.
* Video carries the MOUTH SHAPE (valence-like): smile for happy, frown for angry and sad, flat
  for neutral, so video alone separates happy and neutral but confuses angry with sad. A weak,
  noisy brow cue (angry lowers the inner brows, sad raises them) leaves some of that confusion.
* Together the two streams separate all four classes (happy = aroused smile, angry = aroused
  frown, sad = calm frown, neutral = calm flat).

Audio is a source-filter speech model: a glottal pulse train with a pitch contour (declination,
per-syllable accents, slow drift and cycle-to-cycle jitter, shimmer), breath noise, filtered
frame by frame in the STFT domain by a spectral tilt and a cascade of formant resonators whose
targets follow a vowel chosen per syllable, under a syllable-rate amplitude envelope with pauses
and consonant noise bursts at syllable onsets. Video draws a face (hair, face ellipse, eye
sockets, eyes with blinks, brows, nose, lips) with anti-aliased OpenCV primitives under a
per-frame similarity transform (head translation, scale, roll) and a yaw shift of the features,
then a lighting gradient, blur and noise; the mouth opens with the audio envelope.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf

from avfbp_jax import atomic, interrupt

CORPUS_NAME = "avfbp-synthetic"
GENERATOR_VERSION = 2
SAMPLE_RATE = 16000
FPS = 10.0
FRAME_SIZE = 128  # square frames, pixels
DEFAULT_CLIPS = 560
DEFAULT_CLASSES = ("neutral", "happy", "angry", "sad")
SPLIT_FRACTIONS = (0.7, 0.15, 0.15)  # train, val, test (stratified per class)
TMP_DIR = ".synth-tmp"  # in OUT_DIR while the corpus is unfinished: temporary files, settings
SETTINGS_FILE = "settings.json"  # in TMP_DIR, written first: which corpus is being written

# Per emotion: (arousal, mouth curvature: +1 smile / -1 frown, inner-brow raise: +1 up / -1 down)
EMOTIONS = {
    "neutral": (0.0, 0.0, 0.0),
    "happy": (1.0, 1.0, 0.0),
    "angry": (1.0, -1.0, -1.0),
    "sad": (0.0, -1.0, 1.0),
}

# Vowel formant targets F1, F2, F3 (Hz) for a reference adult vocal tract, and bandwidths.
VOWELS = np.array(
    [[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480], [570, 840, 2410]],
    dtype=np.float64,
)
FORMANT_BANDWIDTHS = np.array([80.0, 100.0, 150.0])
_NFFT, _HOP = 512, 128


@dataclasses.dataclass(frozen=True)
class Cues:
    """Cue strengths and noise levels: the corpus's difficulty knobs."""

    min_seconds: float = 1.5  # clip duration range
    max_seconds: float = 6.0
    segment_fraction: tuple[float, float] = (0.3, 0.7)  # share of the clip showing the emotion
    intensity: tuple[float, float] = (0.6, 1.0)  # per-clip expression strength
    # audio (arousal), applied at full intensity inside the segment
    # (version 2 doubled these five: with version 1's 0.35 / 1.0 / 0.4 / 6 dB / 0.35 the fused
    # model reached 80% val / 83% test and the 85% target was not met)
    pitch_gain: float = 0.7  # relative F0 rise
    accent_gain: float = 2.0  # extra relative size of pitch accents
    rate_gain: float = 0.8  # relative syllable-rate increase
    energy_db: float = 12.0
    tilt_gain: float = 0.7  # reduction of the spectral tilt exponent
    audio_snr_db: float = 35.0  # background noise below the speech peak
    # video (valence-like mouth shape; weak brows)
    smile_gain: float = 1.0  # mouth-corner displacement, in units of 0.14 face half-height
    brow_gain: float = 0.35  # inner-brow displacement, same unit
    rest_mouth_sd: float = 0.2  # per-identity resting mouth curvature, same unit
    rest_brow_sd: float = 0.35  # per-identity resting brow slant, same unit
    pixel_noise: tuple[float, float] = (2.0, 6.0)  # camera noise std range (grey levels)

    def scaled(self, audio: float = 1.0, video: float = 1.0) -> Cues:
        """The same knobs with the audio and the video cue strengths multiplied."""
        return dataclasses.replace(
            self,
            pitch_gain=self.pitch_gain * audio,
            accent_gain=self.accent_gain * audio,
            rate_gain=self.rate_gain * audio,
            energy_db=self.energy_db * audio,
            tilt_gain=self.tilt_gain * audio,
            smile_gain=self.smile_gain * video,
            brow_gain=self.brow_gain * video,
        )


def _segment_weight(t: np.ndarray, start: float, stop: float, ramp: float = 0.15) -> np.ndarray:
    """1 inside [start, stop], 0 outside, raised-cosine ramps of `ramp` seconds inside the edges."""
    up = np.clip((t - start) / ramp, 0.0, 1.0)
    down = np.clip((stop - t) / ramp, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * np.minimum(up, down))


def _smooth_noise(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    """n samples of smooth noise: unit-normal knots every `length` samples, cosine-interpolated."""
    length = max(1, length)
    knots = rng.standard_normal(n // length + 2)
    pos = np.arange(n) / length
    i = pos.astype(int)
    w = 0.5 - 0.5 * np.cos(np.pi * (pos - i))
    return knots[i] * (1.0 - w) + knots[i + 1] * w


def _stft(x: np.ndarray) -> np.ndarray:
    pad = np.pad(x, (_NFFT // 2, _NFFT // 2 + _HOP))
    count = 1 + (len(pad) - _NFFT) // _HOP
    idx = np.arange(count)[:, None] * _HOP + np.arange(_NFFT)[None, :]
    return np.fft.rfft(pad[idx] * np.hanning(_NFFT + 1)[:-1], axis=1)


def _istft(spec: np.ndarray, n: int) -> np.ndarray:
    window = np.hanning(_NFFT + 1)[:-1]
    frames = np.fft.irfft(spec, n=_NFFT, axis=1) * window
    length = _HOP * (len(frames) - 1) + _NFFT
    out, norm = np.zeros(length), np.zeros(length)
    for i, frame in enumerate(frames):
        out[i * _HOP : i * _HOP + _NFFT] += frame
        norm[i * _HOP : i * _HOP + _NFFT] += window**2
    out /= np.maximum(norm, 1e-8)
    return out[_NFFT // 2 : _NFFT // 2 + n]


def _resonators(freqs: np.ndarray, bandwidths: np.ndarray) -> np.ndarray:
    """|H| of cascaded unit-DC-gain digital resonators: freqs [F, K] Hz -> [F, NFFT/2+1]."""
    w = 2.0 * np.pi * np.fft.rfftfreq(_NFFT, 1.0 / SAMPLE_RATE) / SAMPLE_RATE
    z1 = np.exp(-1j * w)[None, None, :]
    r = np.exp(-np.pi * bandwidths / SAMPLE_RATE)[None, :, None]
    c = 2.0 * r * np.cos(2.0 * np.pi * freqs / SAMPLE_RATE)[:, :, None]
    gain = np.abs((1.0 - c + r * r) / (1.0 - c * z1 + r * r * z1 * z1))
    return gain.prod(axis=1)


def synth_audio(
    rng: np.random.Generator, duration: float, arousal: np.ndarray, cues: Cues
) -> tuple[np.ndarray, np.ndarray]:
    """Speech-like audio of `duration` s; arousal: per-sample weight in [0, 1] (len = samples).

    Returns (float32 waveform peak-normalised below 1, per-sample syllable envelope in [0, 1]).
    """
    n = len(arousal)
    t = np.arange(n) / SAMPLE_RATE
    # Speaker identity.
    f0_base = math.exp(rng.uniform(math.log(90.0), math.log(240.0)))
    tract = 1.0 + 0.18 * (math.log(f0_base / 90.0) / math.log(240.0 / 90.0)) + rng.normal(0, 0.03)
    rate_base = rng.uniform(3.5, 5.0)
    breath = rng.uniform(0.02, 0.08)
    tilt_base = rng.uniform(0.9, 1.3)

    # Syllables: onset times, durations, vowels and accents; arousal speeds them up.
    onsets, durations, vowels, accents = [], [], [], []
    s = rng.uniform(0.08, 0.25)
    while s < duration - 0.2:
        a = arousal[min(int(s * SAMPLE_RATE), n - 1)]
        d = rng.uniform(0.75, 1.25) / (rate_base * (1.0 + cues.rate_gain * a))
        d = min(d, duration - 0.1 - s)
        onsets.append(s)
        durations.append(d)
        vowels.append(rng.integers(len(VOWELS)))
        accents.append(rng.normal(0.0, 1.0))
        s += d + (rng.uniform(0.12, 0.35) if rng.random() < 0.12 else 0.0)
    onsets, durations = np.array(onsets), np.array(durations)
    syl = np.clip(np.searchsorted(onsets, t, side="right") - 1, 0, len(onsets) - 1)
    u = (t - onsets[syl]) / durations[syl]  # position inside the syllable, voiced for u in [0, 1)
    voiced = (u >= 0) & (u < 1)
    envelope = np.where(voiced, np.sin(np.pi * np.clip(u, 0, 1)) ** 0.6, 0.0)

    # Pitch contour: declination, accents (bigger when aroused), drift, jitter.
    accent_size = 0.08 * (1.0 + cues.accent_gain * arousal)
    bump = np.sin(np.pi * np.clip(u, 0, 1))
    log_f0 = (
        math.log(f0_base)
        - 0.15 * t / duration
        + np.log1p(cues.pitch_gain * arousal)
        + accent_size * np.array(accents)[syl] * bump
        + 0.02 * _smooth_noise(rng, n, SAMPLE_RATE // 5)
    )
    f0 = np.exp(log_f0)
    phase = np.cumsum(f0 / SAMPLE_RATE)
    pulses = np.flatnonzero(np.diff(np.floor(phase)) > 0) + 1
    source = np.zeros(n)
    jitter = rng.integers(-1, 2, len(pulses))  # +-1 sample cycle-to-cycle jitter
    source[np.clip(pulses + jitter, 0, n - 1)] = rng.uniform(0.9, 1.1, len(pulses))
    source *= np.sqrt(f0_base / f0)  # roughly constant power across pitch
    source += breath * rng.standard_normal(n) * (0.3 + envelope)
    gain = envelope * 10.0 ** (cues.energy_db * arousal / 20.0)

    # Vocal tract per STFT frame: tilt (flatter when aroused) times formant resonators.
    spec = _stft(source * gain)
    frame_t = np.minimum(np.arange(len(spec)) * _HOP, n - 1)
    targets = VOWELS[np.array(vowels)[syl[frame_t]]] * tract
    kernel = np.hanning(9)[1:-1] / np.hanning(9)[1:-1].sum()
    smooth = np.stack([np.convolve(np.pad(c, 3, mode="edge"), kernel, "valid") for c in targets.T])
    formants = np.concatenate([smooth.T, np.full((len(spec), 1), 3500.0 * tract)], axis=1)
    bandwidths = np.append(FORMANT_BANDWIDTHS, 200.0)
    freqs = np.fft.rfftfreq(_NFFT, 1.0 / SAMPLE_RATE)
    tilt = tilt_base * (1.0 - cues.tilt_gain * arousal[frame_t])
    shape = (1.0 + (freqs[None, :] / 300.0) ** 2) ** (-tilt[:, None] / 2.0)
    speech = _istft(spec * shape * _resonators(formants, bandwidths), n)

    # Consonant bursts at syllable onsets: short high-passed noise.
    has_burst = rng.random(len(onsets)) < 0.7
    burst_env = np.where((u >= 0) & (u < 0.12), 1.0 - u / 0.12, 0.0) * has_burst[syl]
    bursts = np.diff(rng.standard_normal(n + 1)) * burst_env
    speech = speech / (np.abs(speech).max() + 1e-12) + 0.06 * bursts * (1.0 + arousal)
    speech /= np.abs(speech).max() + 1e-12
    speech += 10.0 ** (-cues.audio_snr_db / 20.0) * rng.standard_normal(n)
    peak = rng.uniform(0.3, 0.9)
    return (peak * speech / np.abs(speech).max()).astype(np.float32), envelope


def _face_identity(rng: np.random.Generator, cues: Cues) -> dict:
    """Per-clip face and scene parameters (canonical face coordinates: half-height 1)."""
    face = {
        "skin": rng.uniform(150, 215),
        "hair": rng.uniform(15, 70),
        "background": rng.uniform(25, 115),
        "ax": rng.uniform(0.74, 0.84),  # face half-width
        "eye_x": rng.uniform(0.30, 0.36),
        "eye_y": rng.uniform(-0.18, -0.10),
        "eye_w": rng.uniform(0.14, 0.18),
        "brow_y": rng.uniform(-0.38, -0.32),
        "mouth_y": rng.uniform(0.42, 0.50),
        "mouth_w": rng.uniform(0.26, 0.34),
        "lip": rng.uniform(0.045, 0.07),
        "open_max": rng.uniform(0.10, 0.18),
        "rest_mouth": rng.normal(0.0, cues.rest_mouth_sd),
        "rest_brow": rng.normal(0.0, cues.rest_brow_sd),
        "size": rng.uniform(0.36, 0.42) * FRAME_SIZE,  # face half-height in pixels
        "center": rng.uniform(-0.05, 0.05, 2) * FRAME_SIZE + FRAME_SIZE / 2,
        "roll": rng.uniform(-8, 8),
        "yaw": rng.uniform(-0.12, 0.12),
        "noise": rng.uniform(*cues.pixel_noise),
    }
    yy, xx = np.mgrid[0:FRAME_SIZE, 0:FRAME_SIZE] / FRAME_SIZE - 0.5
    angle, strength = rng.uniform(0, 2 * np.pi), rng.uniform(0.0, 0.35)
    gain = rng.uniform(0.8, 1.15)
    direction = np.cos(angle) * xx + np.sin(angle) * yy
    face["lighting"] = (gain * (1.0 + strength * direction)).astype(np.float32)
    return face


_SHIFT = 4  # OpenCV fixed-point fractional bits for sub-pixel drawing
_CIRCLE = np.stack([np.cos(np.arange(40) * np.pi / 20), np.sin(np.arange(40) * np.pi / 20)], 1)
_MOUTH_X = np.linspace(-1.0, 1.0, 21)


def draw_face(
    face: dict,
    curvature: float,
    brow: float,
    mouth_open: float,
    blink: bool,
    pose: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """One uint8 [S, S] frame. curvature/brow in cue units; pose = (dx, dy, dscale, droll)."""
    s = FRAME_SIZE
    size = face["size"] * (1.0 + pose[2])
    angle = np.deg2rad(face["roll"] + pose[3])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) * size
    center = face["center"] + pose[:2]
    yaw = face["yaw"]

    def pts(xy, feature=True):
        xy = np.atleast_2d(np.asarray(xy, np.float64))
        if feature:  # features slide sideways and the far side narrows with yaw
            xy = np.stack([xy[:, 0] * (1.0 - abs(yaw) * 0.4) + yaw * 0.35, xy[:, 1]], axis=1)
        p = xy @ rot.T + center
        return np.round(p * (1 << _SHIFT)).astype(np.int32)

    def ellipse(img, cx, cy, rx, ry, color, feature=True):
        poly = pts(_CIRCLE * (rx, ry) + (cx, cy), feature)
        cv2.fillPoly(img, [poly], float(color), cv2.LINE_AA, _SHIFT)

    skin, hair = face["skin"], face["hair"]
    img = np.full((s, s), face["background"], np.float32)
    ellipse(img, 0.0, -0.18, face["ax"] * 1.12, 0.95, hair, feature=False)  # hair
    neck = pts([[-0.35, 0.6], [0.35, 0.6], [0.45, 1.6], [-0.45, 1.6]], feature=False)
    cv2.fillPoly(img, [neck], float(skin * 0.8), cv2.LINE_AA, _SHIFT)
    ellipse(img, 0.0, 0.05, face["ax"], 0.95, skin, feature=False)  # face
    ellipse(img, 0.0, -0.62, face["ax"] * 0.9, 0.3, hair, feature=False)  # fringe
    ellipse(img, 0.0, 0.08, face["ax"] * 0.95, 0.75, skin, feature=False)
    ex, ey, ew = face["eye_x"], face["eye_y"], face["eye_w"]
    for side in (-1.0, 1.0):
        ellipse(img, side * ex, ey, ew * 1.5, ew * 0.9, skin * 0.72)  # socket shadow
        if blink:
            cv2.polylines(img, [pts([[side * ex - ew, ey], [side * ex + ew, ey]])], False,
                          float(hair), 2, cv2.LINE_AA, _SHIFT)
        else:
            ellipse(img, side * ex, ey, ew, ew * 0.5, min(255.0, skin + 35))
            ellipse(img, side * ex, ey, ew * 0.45, ew * 0.45, 25.0)
        inner_y = face["brow_y"] - 0.14 * (brow + face["rest_brow"])
        brow_line = pts([[side * (ex - ew * 1.1), inner_y], [side * ex, face["brow_y"] - 0.04],
                         [side * (ex + ew * 1.3), face["brow_y"] + 0.02]])
        thick = max(2, int(round(0.07 * size)))
        cv2.polylines(img, [brow_line], False, float(hair), thick, cv2.LINE_AA, _SHIFT)
    nose = pts([[0.0, ey], [0.03, 0.18], [-0.07, 0.24]])
    cv2.polylines(img, [nose], False, float(skin * 0.7), 1, cv2.LINE_AA, _SHIFT)
    for side in (-1.0, 1.0):
        ellipse(img, side * 0.07, 0.25, 0.035, 0.02, skin * 0.45)
    # Mouth: corners rise by `curvature` (smile) and the lips part with the audio envelope.
    x = _MOUTH_X
    mw, my, lip = face["mouth_w"], face["mouth_y"], face["lip"]
    base = my - 0.14 * (curvature + face["rest_mouth"]) * (x**2 - 0.3)
    gap = mouth_open * face["open_max"] * (1.0 - x**2)
    upper = np.stack([mw * x, base - lip - 0.3 * gap], 1)
    lower = np.stack([mw * x, base + lip + 0.7 * gap], 1)[::-1]
    cv2.fillPoly(img, [pts(np.concatenate([upper, lower]))], float(skin * 0.55), cv2.LINE_AA,
                 _SHIFT)
    if mouth_open > 0.05:
        inner = np.concatenate([np.stack([mw * x, base - 0.3 * gap], 1),
                                np.stack([mw * x, base + 0.7 * gap], 1)[::-1]])
        cv2.fillPoly(img, [pts(inner)], 30.0, cv2.LINE_AA, _SHIFT)
    # Lighting gradient, exposure, blur, camera noise.
    img *= face["lighting"]
    img = cv2.GaussianBlur(img, (3, 3), 0.8)
    img += face["noise"] * rng.standard_normal((s, s), dtype=np.float32)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def generate_clip(
    seed: int, index: int, emotion: str, cues: Cues = Cues()
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Clip `index` of the corpus for `seed`: (float32 audio [S], uint8 frames [T, H, W], info).

    info records the duration, the emotional segment (s) and the expression intensity.
    """
    arousal_level, smile, brow = EMOTIONS[emotion]
    rng = np.random.default_rng([seed, index])
    duration, start, stop, intensity = _clip_timing(rng, cues)
    audio_rng, video_rng = (np.random.default_rng(s) for s in rng.integers(2**63, size=2))

    n = int(round(duration * SAMPLE_RATE))
    weight = intensity * _segment_weight(np.arange(n) / SAMPLE_RATE, start, stop)
    audio, envelope = synth_audio(audio_rng, duration, arousal_level * weight, cues)

    count = math.ceil(duration * FPS - 1e-6)
    times = np.arange(count) / FPS
    face_weight = intensity * _segment_weight(times, start, stop)
    half = int(SAMPLE_RATE / FPS / 2)
    centers = (times * SAMPLE_RATE).astype(int)
    opening = np.array([envelope[max(0, c - half) : c + half].mean() for c in centers])
    face = _face_identity(video_rng, cues)
    motion = np.stack(
        [_smooth_noise(video_rng, count, 8) * a for a in (0.02 * FRAME_SIZE, 0.02 * FRAME_SIZE,
                                                          0.02, 2.0)], axis=1
    )
    blinks = video_rng.random(count) < 0.05
    frames = np.stack(
        [
            draw_face(
                face,
                cues.smile_gain * smile * face_weight[k],
                cues.brow_gain * brow * face_weight[k],
                opening[k],
                bool(blinks[k]),
                motion[k],
                video_rng,
            )
            for k in range(count)
        ]
    )
    return audio, frames, _info(duration, start, stop, intensity)


def _clip_timing(rng: np.random.Generator, cues: Cues) -> tuple[float, float, float, float]:
    """The first draws of a clip's generator: duration, emotional segment start and stop (s),
    expression intensity."""
    duration = round(rng.uniform(cues.min_seconds, cues.max_seconds), 2)
    fraction = rng.uniform(*cues.segment_fraction)
    start = rng.uniform(0.0, duration * (1.0 - fraction))
    return duration, start, start + fraction * duration, rng.uniform(*cues.intensity)


def _info(duration: float, start: float, stop: float, intensity: float) -> dict:
    return {"duration": duration, "segment": [round(start, 3), round(stop, 3)],
            "intensity": round(intensity, 3)}


def clip_info(seed: int, index: int, cues: Cues = Cues()) -> dict:
    """The info that generate_clip(seed, index, ...) returns, without generating the clip."""
    return _info(*_clip_timing(np.random.default_rng([seed, index]), cues))


def _write_video(path: Path, frames: np.ndarray) -> None:
    """Grayscale Motion-JPEG AVI via OpenCV: its FFmpeg backend (compact, bundled with the
    opencv-python wheels), else OpenCV's built-in MJPEG writer (about 4x larger files)."""
    size = (frames.shape[2], frames.shape[1])
    fourcc = cv2.VideoWriter_fourcc(*"MJPG")
    for backend in (cv2.CAP_FFMPEG, cv2.CAP_OPENCV_MJPEG):
        writer = cv2.VideoWriter(str(path), backend, fourcc, FPS, size, False)
        if writer.isOpened():
            break
    else:
        raise OSError(f"OpenCV cannot open an MJPEG/AVI writer for {path}")
    for frame in frames:
        writer.write(frame)
    writer.release()


def _make_clip(job: tuple[Path, int, int, str, str, Cues]) -> tuple[int, dict]:
    """Generate clip `index` and write its wav and avi (temp names, then rename)."""
    out_dir, seed, index, emotion, stem, cues = job
    audio, frames, info = generate_clip(seed, index, emotion, cues)
    tmp = out_dir / TMP_DIR
    for ext, write in (
        (".wav", lambda p: sf.write(str(p), audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")),
        (".avi", lambda p: _write_video(p, frames)),
    ):
        tmp_path = tmp / f"{emotion}-{stem}{ext}"
        write(tmp_path)
        os.replace(tmp_path, out_dir / emotion / f"{stem}{ext}")
    return index, info


def _splits(rng: np.random.Generator, count: int) -> list[str]:
    """A shuffled train/val/test assignment of `count` clips of one class."""
    n_val = int(round(SPLIT_FRACTIONS[1] * count))
    n_test = int(round(SPLIT_FRACTIONS[2] * count))
    names = ["val"] * n_val + ["test"] * n_test + ["train"] * (count - n_val - n_test)
    return [names[i] for i in rng.permutation(count)]


def _write_text(path: Path, text: str, tmp_dir: Path) -> None:
    """Writes path atomically through a temporary file in tmp_dir (TMP_DIR: what a stopped run
    leaves stays there, where the next run removes it)."""
    data = text.encode()
    atomic.write(str(path), lambda f: f.write(data), tmp_dir=str(tmp_dir))


def corpus_settings(clips: int, seed: int, classes: tuple[str, ...], cues: Cues) -> dict:
    """What defines a corpus (the same settings give the same bytes), as corpus.json has it."""
    settings = {"name": CORPUS_NAME, "generator": __name__, "version": GENERATOR_VERSION,
                "seed": seed, "classes": list(classes), "num_clips": clips,
                "cues": dataclasses.asdict(cues)}
    return json.loads(json.dumps(settings))  # tuples as lists, as read back from JSON


def _existing_corpus(out: Path, settings: dict) -> dict | None:
    """corpus.json of out if out holds this corpus finished; None if out is absent, empty or
    holds this corpus unfinished. Raises FileExistsError if out holds something else and
    ValueError if it holds a corpus with other settings."""
    if not out.exists() or not any(out.iterdir()):
        return None
    for path in (out / "corpus.json", out / TMP_DIR / SETTINGS_FILE):
        try:
            found = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(found, dict) or found.get("name") != CORPUS_NAME:
            continue
        changed = [f"{k} {found.get(k)!r} -> {v!r}" for k, v in settings.items()
                   if found.get(k) != v]
        finished = path.name == "corpus.json"
        if changed:
            what, advice = (("a", "") if finished else
                            ("an unfinished", "finish it with its own settings, "))
            raise ValueError(f"{out} holds {what} synthetic corpus with other settings "
                             f"({'; '.join(changed)}); {advice}write to another folder or "
                             "delete this one")
        return found if finished else None
    raise FileExistsError(f"{out} is not empty and holds no avfbp synthetic corpus (no "
                          f"corpus.json or {TMP_DIR}/{SETTINGS_FILE}); choose a new or empty "
                          "folder")


def write_corpus(
    out_dir: str | os.PathLike,
    clips: int = DEFAULT_CLIPS,
    seed: int = 0,
    classes: tuple[str, ...] = DEFAULT_CLASSES,
    cues: Cues = Cues(),
    workers: int = 1,
) -> dict:
    """Writes the corpus into out_dir; returns the corpus.json content.

    Clip i has class classes[i % len(classes)] and stem f"clip{i:05d}". out_dir must be absent,
    empty, or hold this corpus: an unfinished one (stopped by Ctrl-C, a kill, a crash) is
    finished, keeping its whole clips, with the bytes an uninterrupted run writes; a finished one
    is left as it is. OUT_DIR/.synth-tmp/settings.json, written first, marks an unfinished
    corpus; corpus.json, written last, a finished one.
    """
    unknown = [c for c in classes if c not in EMOTIONS]
    if unknown or len(classes) < 2 or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be 2+ distinct names from {sorted(EMOTIONS)}: {classes}")
    out = Path(out_dir)
    settings = corpus_settings(clips, seed, classes, cues)
    tmp = out / TMP_DIR
    finished = _existing_corpus(out, settings)
    if finished is not None:
        shutil.rmtree(tmp, ignore_errors=True)  # left by a run stopped right after corpus.json
        return finished
    tmp.mkdir(parents=True, exist_ok=True)
    for path in tmp.iterdir():  # partial files of a stopped run
        if path.name != SETTINGS_FILE:
            path.unlink()
    _write_text(tmp / SETTINGS_FILE, json.dumps(settings, indent=1) + "\n", tmp)
    for name in classes:
        (out / name).mkdir(exist_ok=True)
    infos, jobs = {}, []
    for i in range(clips):
        emotion, stem = classes[i % len(classes)], f"clip{i:05d}"
        if all((out / emotion / f"{stem}{ext}").exists() for ext in (".wav", ".avi")):
            infos[i] = clip_info(seed, i, cues)  # written whole by a stopped run
        else:
            jobs.append((out, seed, i, emotion, stem, cues))
    try:
        if workers > 1 and len(jobs) > 1:
            with interrupt.process_pool(min(workers, len(jobs))) as pool:
                infos.update(pool.imap_unordered(_make_clip, jobs))
        else:
            infos.update(map(_make_clip, jobs))
    except interrupt.Interrupted as e:
        done = sum((out / classes[i % len(classes)] / f"clip{i:05d}.avi").exists()
                   for i in range(clips))
        raise e.with_message(f"interrupted with {done} of {clips} clips of {out} written; run the "
                             "same command to resume") from None
    results = [(f"{classes[i % len(classes)]}/clip{i:05d}", infos[i]) for i in range(clips)]

    split_rng = np.random.default_rng([seed, 2**32])
    split_of, counts = {}, {}
    for name in classes:
        ids = [clip for clip, _ in results if clip.startswith(name + "/")]
        for clip, split in zip(ids, _splits(split_rng, len(ids)), strict=True):
            split_of[clip] = split
        counts[name] = {s: sum(split_of[c] == s for c in ids) for s in ("train", "val", "test")}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["clip", "split"])
    writer.writerows([clip, split_of[clip]] for clip, _ in results)
    _write_text(out / "splits.csv", buffer.getvalue(), tmp)
    meta = {
        "name": CORPUS_NAME,
        "generator": __name__,
        "version": GENERATOR_VERSION,
        "seed": seed,
        "classes": list(classes),
        "num_clips": clips,
        "counts": counts,
        "sample_rate": SAMPLE_RATE,
        "fps": FPS,
        "frame_size": FRAME_SIZE,
        "cues": dataclasses.asdict(cues),
        "clip_info": dict(results),
    }
    _write_text(out / "corpus.json", json.dumps(meta, indent=1) + "\n", tmp)
    shutil.rmtree(tmp)
    return meta


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", help="output directory: absent, empty, or an unfinished "
                        "corpus of the same settings (it is finished)")
    parser.add_argument("--clips", type=int, default=DEFAULT_CLIPS, help="number of clips")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--classes",
        default=",".join(DEFAULT_CLASSES),
        help=f"comma-separated class names in label order, from {sorted(EMOTIONS)}",
    )
    parser.add_argument("--min-seconds", type=float, default=Cues.min_seconds)
    parser.add_argument("--max-seconds", type=float, default=Cues.max_seconds)
    parser.add_argument("--audio-cue", type=float, default=1.0, help="scale audio cue strength")
    parser.add_argument("--video-cue", type=float, default=1.0, help="scale video cue strength")
    parser.add_argument(
        "--workers", type=int, default=min(4, os.cpu_count() or 1), help="worker processes"
    )


def run(args: argparse.Namespace) -> int:
    classes = tuple(c.strip() for c in args.classes.split(",") if c.strip())
    cues = dataclasses.replace(Cues(), min_seconds=args.min_seconds, max_seconds=args.max_seconds)
    cues = cues.scaled(audio=args.audio_cue, video=args.video_cue)
    start = time.perf_counter()
    finished = (Path(args.out_dir) / "corpus.json").exists()
    try:
        meta = write_corpus(args.out_dir, args.clips, args.seed, classes, cues, args.workers)
    except (ValueError, FileExistsError) as e:
        print(f"avfbp synth: error: {e}", file=sys.stderr)
        return 2
    if finished:
        print(f"{args.out_dir} already holds this corpus ({meta['num_clips']} clips); "
              "nothing to do")
        return 0
    seconds = time.perf_counter() - start
    size = sum(f.stat().st_size for f in Path(args.out_dir).rglob("*") if f.is_file())
    print(
        f"wrote {meta['num_clips']} clips ({', '.join(meta['classes'])}) to {args.out_dir}: "
        f"{size / 2**20:.1f} MiB in {seconds:.1f} s ({meta['num_clips'] / seconds:.1f} clips/s)"
    )
    return 0
