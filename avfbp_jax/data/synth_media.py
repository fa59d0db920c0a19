"""The synthetic corpora's media: a source-filter speech model, a drawn face, the AVI writer.

Both tasks of `avfbp synth` (avfbp_jax.data.synthetic: emotion; avfbp_jax.data.cooccurrence)
render their clips with these functions; a task decides where its cues sit in time and passes
them in as per-sample and per-frame weights. The knobs are the `Cues` fields.

Audio is a source-filter speech model: a glottal pulse train with a pitch contour (declination,
per-syllable accents, slow drift and cycle-to-cycle jitter, shimmer), breath noise, filtered
frame by frame in the STFT domain by a spectral tilt and a cascade of formant resonators whose
targets follow a vowel chosen per syllable, under a syllable-rate amplitude envelope with pauses
and consonant noise bursts at syllable onsets. Arousal raises pitch, widens the pitch accents,
speeds up the syllables, adds energy and flattens the tilt. Video draws a face (hair, face
ellipse, eye sockets, eyes with blinks, brows, nose, lips) with anti-aliased OpenCV primitives
under a per-frame similarity transform (head translation, scale, roll) and a yaw shift of the
features, then a lighting gradient, blur and noise; the mouth opens with the audio envelope.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import cv2
import numpy as np

SAMPLE_RATE = 16000
FPS = 10.0
FRAME_SIZE = 128  # square frames, pixels

# Vowel formant targets F1, F2, F3 (Hz) for a reference adult vocal tract, and bandwidths.
VOWELS = np.array(
    [[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480], [570, 840, 2410]],
    dtype=np.float64,
)
FORMANT_BANDWIDTHS = np.array([80.0, 100.0, 150.0])
_NFFT, _HOP = 512, 128


@dataclasses.dataclass(frozen=True)
class Cues:
    """Cue strengths and noise levels: a synthetic corpus's difficulty knobs (each task has its
    own defaults)."""

    min_seconds: float = 1.5  # clip duration range
    max_seconds: float = 6.0
    segment_fraction: tuple[float, float] = (0.3, 0.7)  # share of the clip one cue spans
    intensity: tuple[float, float] = (0.6, 1.0)  # per-clip (per-event) expression strength
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


def segment_weight(t: np.ndarray, start: float, stop: float, ramp: float = 0.15) -> np.ndarray:
    """1 inside [start, stop], 0 outside, raised-cosine ramps of `ramp` seconds inside the edges."""
    up = np.clip((t - start) / ramp, 0.0, 1.0)
    down = np.clip((stop - t) / ramp, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * np.minimum(up, down))


def smooth_noise(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
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
        + 0.02 * smooth_noise(rng, n, SAMPLE_RATE // 5)
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


def frame_times(duration: float) -> np.ndarray:
    """Times (s) of the frames of a clip of `duration` s: k / FPS for k / FPS < duration."""
    return np.arange(math.ceil(duration * FPS - 1e-6)) / FPS


def face_video(
    rng: np.random.Generator,
    times: np.ndarray,
    envelope: np.ndarray,
    curvature: np.ndarray,
    brow: np.ndarray,
    cues: Cues,
) -> np.ndarray:
    """uint8 frames [T, S, S] of one drawn identity at `times` (s; frame_times of the clip).

    curvature, brow: per frame, in cue units (see draw_face). envelope: the audio's per-sample
    syllable envelope (synth_audio), which opens the mouth. The head moves and blinks at random.
    """
    count = len(times)
    half = int(SAMPLE_RATE / FPS / 2)
    centers = (times * SAMPLE_RATE).astype(int)
    opening = np.array([envelope[max(0, c - half) : c + half].mean() for c in centers])
    face = _face_identity(rng, cues)
    motion = np.stack(
        [smooth_noise(rng, count, 8) * a for a in (0.02 * FRAME_SIZE, 0.02 * FRAME_SIZE, 0.02,
                                                   2.0)], axis=1
    )
    blinks = rng.random(count) < 0.05
    return np.stack([draw_face(face, curvature[k], brow[k], opening[k], bool(blinks[k]),
                               motion[k], rng) for k in range(count)])


def write_video(path: Path, frames: np.ndarray) -> None:
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
