"""Which half of a two-person video shows the person speaking: the face whose mouth moves with
the speech.

IEMOCAP's dialog videos show both actors side by side, and an utterance's clip must crop the
speaking actor. With `data.marker_actor_side="auto"` the side is decided per clip from the data:
in each half the face is detected once (on the clip's middle frames), its mouth region (the lower
third of the box, the middle half of its width) gives a motion series (mean absolute difference
between consecutive frames), and the half whose series correlates best (Pearson) with the
speech's loudness per frame interval (RMS) is the speaker. The listener's mouth stays still or
moves out of step with the sound, so its correlation is near zero.
"""

import numpy as np

SIDES = ("left", "right")


def speech_envelope(wave: np.ndarray, sample_rate: int, fps: float, num_frames: int) -> np.ndarray:
    """RMS of the waveform over each frame's interval [t / fps, (t + 1) / fps), [num_frames]."""
    edges = np.round(np.arange(num_frames + 1) * sample_rate / fps).astype(int)
    edges = np.minimum(edges, len(wave))
    return np.array([np.sqrt(np.mean(np.square(wave[a:b]))) if b > a else 0.0
                     for a, b in zip(edges[:-1], edges[1:], strict=True)])


def mouth_motion(frames: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Mean absolute change of the mouth region between consecutive frames, [T] (the first
    frame repeats the second's value)."""
    x, y, w, h = box
    top, bottom = y + (2 * h) // 3, y + h
    left, right = x + w // 4, x + (3 * w) // 4
    region = frames[:, top:bottom, left:right].astype(np.float32)
    if region.size == 0 or len(frames) < 2:
        return np.zeros(len(frames))
    change = np.abs(np.diff(region, axis=0)).mean(axis=(1, 2))
    return np.concatenate([change[:1], change])


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    norm = np.sqrt(np.sum(a * a) * np.sum(b * b))
    return float(np.sum(a * b) / norm) if norm > 0 else 0.0


def _face(half: np.ndarray, detector) -> tuple[int, int, int, int] | None:
    """The face in the middle frames of one half (the first one found, from the middle out)."""
    middle = len(half) // 2
    order = sorted(range(len(half)), key=lambda t: abs(t - middle))[:5]
    for t in order:
        box = detector.detect(np.ascontiguousarray(half[t]))
        if box is not None:
            return box
    return None


def speaking_side(frames: np.ndarray, wave: np.ndarray, sample_rate: int, fps: float,
                  detector) -> str | None:
    """"left" or "right": the half of uint8 [T, H, W] frames whose face's mouth moves with the
    speech in `wave`; None when no half shows a face or no mouth moves with the sound."""
    envelope = speech_envelope(wave, sample_rate, fps, len(frames))
    width = frames.shape[2] // 2
    scores = {}
    for side, half in zip(SIDES, (frames[:, :, :width], frames[:, :, width:]), strict=True):
        box = _face(half, detector)
        if box is not None:
            scores[side] = _correlation(envelope, mouth_motion(half, box))
    if not scores or max(scores.values()) <= 0:
        return None
    return max(scores, key=scores.get)
