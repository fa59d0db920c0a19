"""The synthetic corpus: real files, layout, determinism, and where the emotion cues sit."""

import csv
import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import soundfile as sf

from avfbp_jax.commands import cli
from avfbp_jax.data import synthetic
from avfbp_jax.data.faces import FaceCropper
from avfbp_jax.data.media import read_audio, read_video

SHORT = dataclasses.replace(synthetic.Cues(), min_seconds=1.5, max_seconds=2.0)

# sha256 of what the emotion task wrote at commit df4fcf3, before the co-occurrence task and the
# split of this module: the fixture's corpus (seed 3, SHORT cues) and two default-cue clips
# (audio float32 bytes, frames uint8 bytes). The .avi files hold these frames as the unchanged
# writer encodes them (their bytes depend on the OpenCV/FFmpeg build, so they are not pinned).
PINNED_FILES = {
    "angry/clip00002.wav": "09546a3827c4821e8888cad942a0af2dcb276508c2869268a46d8390ba082e1f",
    "angry/clip00006.wav": "64deec203d9b28ac399e36284cd37196fb3dc570adfc38b63b11d85110e1a543",
    "corpus.json": "d60b996f5c1e3cfc265cdae80de11b89e3a774ef7274944429a878073ec8af34",
    "happy/clip00001.wav": "e755ec5428b016a38b99c6b6441333c2d8c06b0f9c7ff398b7c9f904f2787bcc",
    "happy/clip00005.wav": "98a2b7eff3b8b989556af873ccc0b94e8990e7cc7f554e62686262afc2d08696",
    "neutral/clip00000.wav": "5827432a06b4e9b78c8b3afc12d8aaefce3465538787ed0f04fc906bac175bf8",
    "neutral/clip00004.wav": "4c9e255ce855cc6dca67c2d40f102ce92dcaee5760b1038c27526bec37e08cdf",
    "sad/clip00003.wav": "5731e4de605cde9efbba61383aff1ef36b4db0694a86be785fec532e63a34cd0",
    "sad/clip00007.wav": "acaafcf8972463fe51ebe5dfaf76496c3c76f66ee38784d566bbd7284245724a",
    "splits.csv": "fb5fa0d16597f06d2081743582a1a1d74a7a4b9a8b543ec625b3ccd6c697d340",
}
PINNED_CLIPS = {
    (0, 0, "neutral"): ("0ba6940c94557a8ca233381c78acd5abcb05983043c45d320a1a9c6a3fa611d2",
                        "3e3106b13e2007f8856f1dd0ba73856ce0fa1bb3669018b7f6afb9eeb8a131d3"),
    (7, 5, "angry"): ("0ce8a0e050735799a7177f53ffcfc5eda36cdcf841ced2af22d884b862d7c7ab",
                      "7fa2c2dd8f41b35e88987c0c672c3aa3bb4abee66b876f8e954b0c07c001b760"),
}


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


def test_the_emotion_task_writes_the_bytes_it_wrote_before(corpus):
    hashes = _hashes(corpus)
    assert {name: hashes[name] for name in PINNED_FILES} == PINNED_FILES
    for (seed, index, emotion), pinned in PINNED_CLIPS.items():
        audio, frames, _ = synthetic.generate_clip(seed, index, emotion)
        got = tuple(hashlib.sha256(a.tobytes()).hexdigest() for a in (audio, frames))
        assert got == pinned, (seed, index, emotion)


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


def test_cli_writes_corpus_and_refuses_other_folders(tmp_path, capsys):
    out = tmp_path / "c"
    argv = ["synth", str(out), "--clips", "4", "--seed", "1", "--classes", "happy,sad",
            "--min-seconds", "1.5", "--max-seconds", "1.6", "--workers", "1"]
    assert cli.main(argv) == 0
    meta = json.loads((out / "corpus.json").read_text())
    assert meta["classes"] == ["happy", "sad"] and meta["num_clips"] == 4
    assert "wrote 4 clips" in capsys.readouterr().out
    before = _hashes(out)
    assert cli.main(argv) == 0  # the same command again: nothing to do
    assert "already holds this corpus" in capsys.readouterr().out
    assert _hashes(out) == before
    assert cli.main([*argv[:5], "2", *argv[6:]]) == 2
    assert "other settings (seed 1 -> 2)" in capsys.readouterr().err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("not a corpus")
    assert cli.main(["synth", str(tmp_path / "mine"), "--clips", "4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds no avfbp synthetic corpus" in err
    assert cli.main(["synth", str(tmp_path / "d"), "--classes", "happy,bored"]) == 2


def _unfinish(corpus, out):
    """A copy of corpus as a run stopped midway leaves it: some clips missing or half there (the
    wav renamed into place, the avi not), temporary files, no splits.csv or corpus.json."""
    shutil.copytree(corpus, out)
    meta = json.loads((out / "corpus.json").read_text())
    (out / "corpus.json").unlink()
    (out / "splits.csv").unlink()
    for clip in ("neutral/clip00004", "happy/clip00005"):
        (out / f"{clip}.wav").unlink()
        (out / f"{clip}.avi").unlink()
    (out / "sad/clip00007.avi").unlink()
    tmp = out / synthetic.TMP_DIR
    tmp.mkdir()
    settings = synthetic.corpus_settings(meta["num_clips"], meta["seed"],
                                         tuple(meta["classes"]), SHORT)
    (tmp / synthetic.SETTINGS_FILE).write_text(json.dumps(settings))
    (tmp / "sad-clip00007.avi").write_bytes(b"RIFF half an avi")


def test_an_unfinished_corpus_is_finished_with_the_same_bytes(corpus, tmp_path):
    out = tmp_path / "unfinished"
    _unfinish(corpus, out)
    with pytest.raises(ValueError, match="unfinished synthetic corpus with other settings"):
        synthetic.write_corpus(out, clips=8, seed=4, cues=SHORT, workers=1)
    synthetic.write_corpus(out, clips=8, seed=3, cues=SHORT, workers=2)
    assert _hashes(out) == _hashes(corpus)
    assert not (out / synthetic.TMP_DIR).exists()


def test_clip_info_is_what_generate_clip_returns():
    for index, emotion in ((0, "neutral"), (7, "sad")):
        assert synthetic.clip_info(3, index, SHORT) == synthetic.generate_clip(
            3, index, emotion, SHORT)[2]


@pytest.mark.slow  # about 15 s: two corpora of 40 default clips
def test_ctrl_c_during_generation_then_rerun_gives_the_uninterrupted_corpus(tmp_path):
    """Ctrl-C in a terminal (SIGINT to the whole process group: the command and its workers)
    while `avfbp synth` writes a default corpus: one line, status 130, and the same command
    then finishes it with the bytes of an uninterrupted run."""
    out = tmp_path / "interrupted"
    argv = [sys.executable, "-m", "avfbp_jax.commands.cli", "synth", str(out), "--clips", "40",
            "--seed", "5", "--workers", "2"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    while proc.poll() is None and not list(out.glob("*/clip*.avi")):  # a first clip is written
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout + stderr
    assert re.fullmatch(rf"avfbp synth: interrupted with \d+ of 40 clips of {out} written; run "
                        r"the same command to resume\n", stderr), stderr
    written = int(re.search(r"with (\d+) of", stderr).group(1))
    assert 1 <= written < 40 and not (out / "corpus.json").exists()
    rerun = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0 and "wrote 40 clips" in rerun.stdout, rerun.stderr
    synthetic.write_corpus(tmp_path / "uninterrupted", clips=40, seed=5, workers=1)
    assert _hashes(out) == _hashes(tmp_path / "uninterrupted")
