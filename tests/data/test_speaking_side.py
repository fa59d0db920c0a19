"""The speaking half of a two-person video: the face whose mouth moves with the speech."""

import cv2
import numpy as np
import pytest
import soundfile
from data.data_helpers import face_image, write_video

from avfbp_jax.data.faces import FaceCropper, make_detector
from avfbp_jax.data.prepare import load_clip
from avfbp_jax.data.speaking_side import mouth_motion, speaking_side, speech_envelope

FPS, RATE, SIDE = 10, 16000, 240


def talking(face: np.ndarray, box, opening: np.ndarray) -> np.ndarray:
    """Frames of `face` whose mouth (a dark ellipse in the box's lower third) opens by
    `opening` [T] in [0, 1]."""
    x, y, w, h = box
    centre = (x + w // 2, y + (5 * h) // 6)
    frames = np.repeat(face[None], len(opening), axis=0)
    for frame, o in zip(frames, opening, strict=True):
        cv2.ellipse(frame, centre, (w // 5, max(1, int(o * h / 12))), 0, 0, 360, 60, -1)
    return frames


def speech(opening: np.ndarray, seed: int) -> np.ndarray:
    """A voiced waveform whose loudness in each frame interval follows `opening`."""
    t = np.arange(round(len(opening) * RATE / FPS)) / RATE
    level = np.repeat(opening, RATE // FPS)[:len(t)]
    noise = np.random.default_rng(seed).standard_normal(len(t)) * 0.01
    return (0.4 * level * np.sin(2 * np.pi * 180 * t) + noise).astype(np.float32)


@pytest.fixture(scope="module")
def scene():
    face = face_image(SIDE)
    detector = make_detector("haar")
    box = detector.detect(face)
    assert box is not None
    rng = np.random.default_rng(0)
    said = (rng.random(40) < 0.5).astype(float)  # syllables on and off, 4 s at 10 frames/s
    other = (rng.random(40) < 0.5).astype(float)  # the listener's mouth, out of step
    return face, box, detector, said, other


@pytest.mark.parametrize("speaker", ["left", "right"])
def test_the_mouth_that_moves_with_the_speech_wins(scene, speaker):
    face, box, detector, said, other = scene
    mine, theirs = talking(face, box, said), talking(face, box, other)
    halves = (mine, theirs) if speaker == "left" else (theirs, mine)
    frames = np.concatenate(halves, axis=2)
    assert speaking_side(frames, speech(said, 1), RATE, FPS, detector) == speaker
    # A still listener: the same answer.
    still = talking(face, box, np.zeros(len(said)))
    halves = (mine, still) if speaker == "left" else (still, mine)
    assert speaking_side(np.concatenate(halves, axis=2), speech(said, 2), RATE, FPS,
                         detector) == speaker


def test_no_face_or_no_movement_is_undecided(scene):
    face, box, detector, said, _ = scene
    blank = np.full((len(said), SIDE, 2 * SIDE), 128, np.uint8)
    assert speaking_side(blank, speech(said, 3), RATE, FPS, detector) is None
    still = talking(face, box, np.zeros(len(said)))
    frames = np.concatenate([still, still], axis=2)
    assert speaking_side(frames, speech(said, 4), RATE, FPS, detector) is None


def test_envelope_and_motion_follow_their_inputs(scene):
    face, box, _, said, _ = scene
    envelope = speech_envelope(speech(said, 5), RATE, FPS, len(said))
    assert envelope.shape == (40,) and np.corrcoef(envelope, said)[0, 1] > 0.99
    motion = mouth_motion(talking(face, box, said), box)
    assert motion.shape == (40,) and np.all(motion[1:][np.diff(said) == 0] == 0)
    assert np.all(motion[1:][np.diff(said) != 0] > 0)


def test_load_clip_crops_the_speaker(scene, tmp_path):
    """Through the real decoders: an MJPEG video of both people and the speaker's wav."""
    face, box, detector, said, other = scene
    frames = np.concatenate([talking(face, box, other), talking(face, box, said)], axis=2)
    video, audio = tmp_path / "dialog.avi", tmp_path / "utterance.wav"
    write_video(str(video), frames, fps=FPS)
    soundfile.write(audio, speech(said, 6), RATE, subtype="PCM_16")
    cropper = FaceCropper(64, detector=detector)
    clip = load_clip(str(video), str(audio), region="speaking", fps=FPS, cropper=cropper)
    right = load_clip(str(video), str(audio), region="right", fps=FPS, cropper=cropper)
    np.testing.assert_array_equal(clip["frames"], right["frames"])
