"""The synthetic corpus: real files, layout, determinism, and where the emotion cues sit."""

import csv
import dataclasses
import hashlib
import json

import cv2
import numpy as np
import pytest
import soundfile as sf

from avfbp_jax import cli
from avfbp_jax.data import synthetic
from avfbp_jax.data.faces import FaceCropper
from avfbp_jax.data.media import read_audio, read_video

SHORT = dataclasses.replace(synthetic.Cues(), min_seconds=1.5, max_seconds=2.0)


def _hashes(root):
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "corpus"
    synthetic.write_corpus(root, clips=8, seed=3, cues=SHORT, workers=1)
    return root


def test_layout_splits_and_metadata(corpus):
    classes = list(synthetic.DEFAULT_CLASSES)
    meta = json.loads((corpus / "corpus.json").read_text())
    assert meta["classes"] == classes and meta["seed"] == 3 and meta["num_clips"] == 8
    assert meta["version"] == synthetic.GENERATOR_VERSION
    with open(corpus / "splits.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["clip", "split"]
    clips = {clip: split for clip, split in rows[1:]}
    assert len(clips) == 8 and set(clips.values()) <= {"train", "val", "test"}
    for i in range(8):
        clip = f"{classes[i % 4]}/clip{i:05d}"
        assert clip in clips
        assert (corpus / f"{clip}.wav").is_file() and (corpus / f"{clip}.avi").is_file()
    for name in classes:
        assert sum(meta["counts"][name].values()) == 2
        assert sum(c.startswith(name + "/") for c in clips) == 2
    expected = sorted([*classes, "corpus.json", "splits.csv"])
    assert sorted(p.name for p in corpus.iterdir()) == expected  # no temporary files left


def test_files_decode_with_the_real_decoders(corpus):
    meta = json.loads((corpus / "corpus.json").read_text())
    cropper = FaceCropper()
    found = []
    for clip, info in meta["clip_info"].items():
        wav = corpus / f"{clip}.wav"
        assert sf.info(str(wav)).samplerate == 16000 and sf.info(str(wav)).subtype == "PCM_16"
        audio = read_audio(wav)
        assert len(audio) == round(info["duration"] * 16000)
        frames, duration = read_video(corpus / f"{clip}.avi", fps=10.0)
        count = int(np.ceil(info["duration"] * 10 - 1e-6))
        assert frames.shape == (count, synthetic.FRAME_SIZE, synthetic.FRAME_SIZE)
        assert duration == pytest.approx(count / 10)
        capture = cv2.VideoCapture(str(corpus / f"{clip}.avi"))  # OpenCV reads it back too
        assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == count
        capture.release()
        found.append(cropper.crop_frames(frames)[1])
    assert np.concatenate(found).mean() > 0.9  # the Haar cascade finds the drawn faces


def test_same_seed_same_bytes_any_worker_count(corpus, tmp_path):
    synthetic.write_corpus(tmp_path / "again", clips=8, seed=3, cues=SHORT, workers=2)
    assert _hashes(tmp_path / "again") == _hashes(corpus)
    synthetic.write_corpus(tmp_path / "other", clips=8, seed=4, cues=SHORT, workers=1)
    a, b = _hashes(tmp_path / "other"), _hashes(corpus)
    assert not any(a[k] == b[k] for k in a if k.endswith((".wav", ".avi")))


def test_cues_sit_in_the_segment_and_in_the_designed_modality():
    # Audio carries arousal only: neutral and sad (both calm) give identical audio, so video
    # frames outside the emotional segment are identical too; inside, the mouth differs.
    neutral_audio, neutral_frames, info = synthetic.generate_clip(5, 17, "neutral", SHORT)
    sad_audio, sad_frames, _ = synthetic.generate_clip(5, 17, "sad", SHORT)
    happy_audio, happy_frames, _ = synthetic.generate_clip(5, 17, "happy", SHORT)
    np.testing.assert_array_equal(neutral_audio, sad_audio)
    assert not np.array_equal(neutral_audio, happy_audio)
    start, stop = info["segment"]
    times = np.arange(len(neutral_frames)) / synthetic.FPS
    outside = (times < start) | (times > stop)
    inside = (times > start + 0.15) & (times < stop - 0.15)
    assert outside.any() and inside.any()
    diff = np.abs(neutral_frames.astype(int) - sad_frames.astype(int)).max(axis=(1, 2))
    assert (diff[outside] == 0).all() and (diff[inside] > 30).all()
    # Happy speech is faster and higher inside the segment: more energy there than neutral.
    seg = slice(int(start * 16000), int(stop * 16000))
    rms = lambda x: np.sqrt(np.mean(x[seg] ** 2) / np.mean(x**2))
    assert rms(happy_audio) > rms(neutral_audio)


def test_cli_writes_corpus_and_refuses_a_non_empty_directory(tmp_path, capsys):
    out = tmp_path / "c"
    argv = ["synth", str(out), "--clips", "4", "--seed", "1", "--classes", "happy,sad",
            "--min-seconds", "1.5", "--max-seconds", "1.6", "--workers", "1"]
    assert cli.main(argv) == 0
    meta = json.loads((out / "corpus.json").read_text())
    assert meta["classes"] == ["happy", "sad"] and meta["num_clips"] == 4
    assert "wrote 4 clips" in capsys.readouterr().out
    assert cli.main(argv) == 2
    assert "not empty" in capsys.readouterr().out
    assert cli.main(["synth", str(tmp_path / "d"), "--classes", "happy,bored"]) == 2
