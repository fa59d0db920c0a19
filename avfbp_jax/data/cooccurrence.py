"""The co-occurrence task of the synthetic corpus (`avfbp synth OUT --task cooccurrence`).

A probe of the one thing AM-FBP's trunk level claims to add over a global head: knowing whether
audio and video evidence happen at the same time. Every clip carries one AUDIO EVENT and one
FACIAL EVENT, each covering the same random 15-25% of the clip, placed anywhere in it; the rest
is neutral speech and a neutral face. Clips last 4.5-6 s. The eight classes cross three factors:
* whether the events overlap in time: "together" (by at least half their length) or "apart"
  (separated by at least 5% of the clip);
* the voice: "high" (pitch x1.7, wider accents, +12 dB, flatter tilt) or "low" (pitch x0.65,
  flat accents, -6 dB, steeper tilt); the syllable rate never changes;
* the face: "smile" or "frown".
The voice and the face are there to be learnt from pooled streams, one by each stream: a head
that learns both and no more reaches 50%, which tells a head that trained from one that failed.
Each stream must find its own event to learn its factor, which the overlap needs too. (With the
overlap as the only label, AM-FBP stayed at chance on validation and, given 1200 steps,
memorised the training clips; with one direction shared by voice and face, one stream learnt it
and the other stayed blind to its event. See the README's co-occurrence section.)

Placement, in the coordinates of where an event may start (0: at the clip's start, 1: it ends
at the clip's end): the audio event starts at a uniform u. "together" puts the facial event at
u + d reflected into [0, 1], d uniform and symmetric; "apart" at u + r modulo 1, r uniform in
[0.4, 0.6]. Both maps carry the uniform distribution onto itself, so under every class each
event's position is uniform, and independent of the duration and of the (shared) event length.
The draws are the same for all classes: clips of one index differ only in where the facial
event sits and in which way each event goes. Event positions are uniform, so events straddle
any trunk boundary, "apart" events often touch a same trunk and "together" overlaps often
straddle one: no trunk layout is a shortcut.

Ceilings (chance 12.5%):
* audio: 25% (the voice), video: 25% (the face). Where a stream's event sits is uniform
  whatever the class.
* concat, late, G-FBP, AG-FBP, and AM-FBP with 1 trunk (one more global vector): about 50%,
  voice and face but not the overlap. They see each stream pooled over the whole clip. The video
  stream encodes frames one by one, so its pooled vector is a function of the set of frames: it
  says that a smile happened, not when. The mouth opens with the speech envelope, which the
  audio event does not change. What pooling leaks is small: the audio vector may know roughly
  where its event was (its convolutions see about 2 s, the pitch declines over the clip), and
  face-event frames at a clip's edges fall more often on the silence before the first and after
  the last syllable.
* AM-FBP with N trunks: each trunk pools both streams within it, and its FBP is a product of
  the two, so the head can count the trunks that hold both events. A head that knows voice and
  face and exactly which trunks each event touches (the counts of trunks with both events, only
  the audio event, only the face event) reaches at best 93.7% with 2 trunks, 99.5% with 3 and
  95.9% with 5 (Monte Carlo of this placement, tests/data/test_cooccurrence.py). That is not
  monotonic in N: which count patterns the overlap classes share depends on how the event
  lengths compare with the trunk width (with 5 trunks an apart pair's tail and head often share
  a trunk, as a together pair's do); a head that also reads how much of a trunk each event
  covers can do better. A trained model stays below, its audio resolution being coarse: with
  the synthetic preset's audio stream one step is 0.32 s from the next and sees up to 1.95 s
  of spectrogram, and the audio trunk boundaries sit up to one step (0.35 s) from the video's.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from avfbp_jax.data.synth_media import (
    SAMPLE_RATE,
    Cues,
    face_video,
    frame_times,
    segment_weight,
    synth_audio,
)

# Per class: (the events overlap, the audio event's arousal, the face's mouth curvature), the
# last two before the event's intensity and cue gain.
VOICES = {"high": 1.0, "low": -0.5}
FACES = {"smile": 1.0, "frown": -1.0}
CLASS_FACTORS = {
    f"{overlap}-{voice}-{face}": (overlap == "together", VOICES[voice], FACES[face])
    for face in FACES for voice in VOICES for overlap in ("apart", "together")
}
CLASSES = tuple(CLASS_FACTORS)
# Event length (segment_fraction) and duration; rate_gain 0: the syllables, and so the mouth
# opening that follows them, do not show the audio event; a strong face event (the task tests
# when the events happen more than whether they can be seen).
CUES = dataclasses.replace(Cues(), min_seconds=4.5, max_seconds=6.0,
                           segment_fraction=(0.15, 0.25), rate_gain=0.0, smile_gain=2.0)
TOGETHER_OFFSET = 0.5  # together: start difference at most this times the event length
APART_ROTATION = (0.4, 0.6)  # apart: rotation of the start position (see the module docstring)


def _reflect(x: float) -> float:
    """x in [-1, 2] folded into [0, 1] by reflection at 0 and 1."""
    x = abs(x)
    return 2.0 - x if x > 1.0 else x


def _timing(rng: np.random.Generator, name: str, cues: Cues):
    """The first draws of a clip's generator: duration (s), audio and video event (start, stop)
    in s, and their intensities. The draws do not depend on the class."""
    if name not in CLASS_FACTORS:
        raise ValueError(f"unknown class {name!r} of the cooccurrence task, expected one of "
                         f"{CLASSES}")
    low, high = cues.segment_fraction
    longest = APART_ROTATION[0] / (1.0 + APART_ROTATION[0])  # beyond it "apart" events overlap
    if not 0.0 < low <= high < longest:
        raise ValueError(f"the cooccurrence task needs event lengths (segment_fraction) in "
                         f"(0, {longest:.3f}), got {cues.segment_fraction}")
    duration = round(rng.uniform(cues.min_seconds, cues.max_seconds), 2)
    length = rng.uniform(low, high)  # each event's share of the clip
    span = 1.0 - length  # an event starts within this share of the clip
    audio_at = rng.uniform()  # start, as a share of span
    together_at = _reflect(audio_at + rng.uniform(-1.0, 1.0) * TOGETHER_OFFSET * length / span)
    apart_at = (audio_at + rng.uniform(*APART_ROTATION)) % 1.0
    video_at = together_at if CLASS_FACTORS[name][0] else apart_at
    intensity = rng.uniform(*cues.intensity, size=2)
    audio, video = (((at * span) * duration, (at * span + length) * duration)
                    for at in (audio_at, video_at))
    return duration, audio, video, intensity


def _info(duration: float, audio: tuple[float, float], video: tuple[float, float],
          intensity: np.ndarray) -> dict:
    return {"duration": duration, "audio_event": [round(t, 3) for t in audio],
            "video_event": [round(t, 3) for t in video],
            "intensity": [round(float(i), 3) for i in intensity]}


def generate_clip(
    seed: int, index: int, name: str, cues: Cues = CUES
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Clip `index` for `seed` of class `name`: (float32 audio [S], uint8 frames [T, H, W], info).

    info: the duration, the audio and the video event (s) and their intensities (audio, video).
    """
    rng = np.random.default_rng([seed, index])
    duration, audio_event, video_event, intensity = _timing(rng, name, cues)
    audio_rng, video_rng = (np.random.default_rng(s) for s in rng.integers(2**63, size=2))
    n = int(round(duration * SAMPLE_RATE))
    _, voice, face = CLASS_FACTORS[name]
    arousal = voice * intensity[0] * segment_weight(np.arange(n) / SAMPLE_RATE, *audio_event)
    audio, envelope = synth_audio(audio_rng, duration, arousal, cues)
    times = frame_times(duration)
    mouth = cues.smile_gain * face * intensity[1] * segment_weight(times, *video_event)
    frames = face_video(video_rng, times, envelope, mouth, np.zeros_like(mouth), cues)
    return audio, frames, _info(duration, audio_event, video_event, intensity)


def clip_info(seed: int, index: int, name: str, cues: Cues = CUES) -> dict:
    """The info that generate_clip(seed, index, name, cues) returns, without generating the clip."""
    return _info(*_timing(np.random.default_rng([seed, index]), name, cues))
