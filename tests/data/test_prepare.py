"""`avfbp prepare` and load_clip end to end on real media files (a real face photograph)."""

import json
import os
import signal

import numpy as np
import pytest
import soundfile
from data_helpers import (
    face_frames,
    tone,
    write_afew,
    write_iemocap,
    write_video,
    write_wav,
)

from avfbp_jax.commands import cli
from avfbp_jax.data import cache as cache_lib
from avfbp_jax.data import prepare as prepare_lib
from avfbp_jax.data.batch import collate
from avfbp_jax.data.cache import FeatureCache
from avfbp_jax.data.corpora import IEMOCAP_CLASSES
from avfbp_jax.data.faces import FaceCropper
from avfbp_jax.data.media import MediaError
from avfbp_jax.data.prepare import load_clip

ARGS = ["--fps", "10", "--crop-size", "32", "--workers", "1"]


def prepare(corpus, cache_dir, *extra):
    return cli.main(["prepare", str(corpus), str(cache_dir), *ARGS, *extra])


def make_corpus(root):
    """Four usable clips and four bad ones, each bad for a different reason."""
    write_wav(f"{root}/happy/h0.wav", 1.0)
    write_video(f"{root}/happy/h0.avi", face_frames(1.0, every=2))  # faces on even frames
    write_wav(f"{root}/happy/h1.wav", 0.6, sample_rate=22050)  # resampled to 16 kHz
    write_video(f"{root}/happy/h1.avi", face_frames(0.6))
    write_video(f"{root}/sad/s0.avi", face_frames(0.8), audio=tone(0.8))  # audio track only
    write_wav(f"{root}/sad/s1.wav", 1.2)
    write_video(f"{root}/sad/s1.avi", face_frames(1.2))
    # Bad: no face in any frame, corrupt wav, silent wav, audio without a video.
    write_wav(f"{root}/sad/noface.wav", 0.5)
    write_video(f"{root}/sad/noface.avi", face_frames(0.5, every=100)[1:])
    write_video(f"{root}/sad/corrupt.avi", face_frames(0.5))
    with open(f"{root}/sad/corrupt.wav", "wb") as f:
        f.write(b"RIFF\x24\x00\x00\x00WAVEjunkjunkjunk" * 3)
    soundfile.write(f"{root}/happy/silent.wav", np.zeros(8000, np.float32), 16000)
    write_video(f"{root}/happy/silent.avi", face_frames(0.5))
    write_wav(f"{root}/happy/lonely.wav", 0.5)
    with open(f"{root}/splits.csv", "w") as f:
        f.write("clip,split\n" + "".join(
            f"{c},{s}\n" for c, s in [("happy/h0", "train"), ("happy/h1", "val"),
                                      ("sad/s0", "train"), ("sad/s1", "test"),
                                      ("sad/noface", "train"), ("sad/corrupt", "train"),
                                      ("happy/silent", "train"), ("happy/lonely", "train")]))


def test_prepare_folder_corpus(tmp_path, capsys):
    make_corpus(tmp_path / "corpus")
    assert prepare(tmp_path / "corpus", tmp_path / "cache") == 0
    out, err = capsys.readouterr()
    assert "4 clips in" in out and "4 skipped" in out and "clips/s" in out
    assert "prepare 8/8 (100%)" in err and "clips/s" in err  # progress reached the end

    fc = FeatureCache(str(tmp_path / "cache"))
    assert fc.classes == ["happy", "sad"]
    assert [(r["id"], r["label"], r["split"]) for r in fc.records] == [
        ("happy/h0", 0, "train"), ("happy/h1", 0, "val"), ("sad/s0", 1, "train"),
        ("sad/s1", 1, "test")]
    assert fc.settings["fps"] == 10.0 and fc.settings["crop_size"] == 32
    reasons = {s["id"]: s["reason"] for s in fc.skipped}
    assert set(reasons) == {"sad/noface", "sad/corrupt", "happy/silent", "happy/lonely"}
    assert "noface.avi: no face found in any of 4 frames" in reasons["sad/noface"]
    assert "corrupt.wav" in reasons["sad/corrupt"]
    assert "silent.wav: silent audio" in reasons["happy/silent"]
    assert "lonely.wav: no video file" in reasons["happy/lonely"]

    h0, h1, s0, s1 = (fc.get(i) for i in range(4))
    assert h0["audio"].shape == (16000,) and h0["frames"].shape == (10, 32, 32)
    np.testing.assert_array_equal(h0["frame_mask"], np.arange(10) % 2 == 0)
    assert not h0["frames"][1].any() and h0["frames"][0].std() > 20  # a face crop, zeros if none
    assert h1["audio"].shape == (9600,) and h1["frame_mask"].all()  # 0.6 s at 22.05 -> 16 kHz
    np.testing.assert_allclose(s0["audio"][1000:12000] / 32767, tone(0.8)[1000:12000], atol=2e-3)
    assert [r["num_faces"] for r in fc.records] == [5, 6, 8, 12]
    assert [r["audio_len"] for r in fc.records] == [16000, 9600, 12800, 19200]


def test_prepare_resumes_and_parallel_matches(tmp_path, capsys):
    make_corpus(tmp_path / "corpus")
    cache = tmp_path / "cache"
    assert prepare(tmp_path / "corpus", cache, "--workers", "2") == 0
    first = FeatureCache(str(cache))
    clips = cache / "clips"
    stamps = {n: os.stat(clips / n).st_mtime_ns for n in os.listdir(clips)}
    # An interrupted run: no index yet, one clip file missing, a temporary file left behind.
    os.remove(cache / "index.json")
    os.remove(clips / "sad__s1.npz")
    (clips / ".tmp-abc123").write_bytes(b"half a clip")
    capsys.readouterr()
    assert prepare(tmp_path / "corpus", cache) == 0
    assert "(1 new, 3 reused)" in capsys.readouterr().out
    assert sorted(os.listdir(clips)) == sorted(stamps)  # temporary file cleaned up
    assert all(os.stat(clips / n).st_mtime_ns == stamps[n] for n in stamps if n != "sad__s1.npz")

    again = FeatureCache(str(cache))
    assert again.records == first.records and again.skipped == first.skipped
    for i in range(len(first)):
        for key, value in first.get(i).items():
            np.testing.assert_array_equal(again.get(i)[key], value)

    assert prepare(tmp_path / "corpus", cache, "--fps", "5") == 2
    assert "prepared with other settings (fps=10.0)" in capsys.readouterr().err


def test_ctrl_c_stops_with_one_line_and_the_rerun_finishes(tmp_path, capsys, monkeypatch):
    """A SIGINT while the third clip is decoded: status 130, one line, whole clip files only and
    no index; the same command then finishes the cache as an uninterrupted run writes it."""
    make_corpus(tmp_path / "corpus")
    assert prepare(tmp_path / "corpus", tmp_path / "uninterrupted") == 0
    real, calls = prepare_lib._prepare_one, []

    def ctrl_c_at_the_third_clip(job):
        calls.append(job)
        if len(calls) == 3:
            signal.raise_signal(signal.SIGINT)
        return real(job)

    monkeypatch.setattr(prepare_lib, "_prepare_one", ctrl_c_at_the_third_clip)
    cache = tmp_path / "cache"
    capsys.readouterr()
    assert prepare(tmp_path / "corpus", cache) == 130
    err = capsys.readouterr().err  # the progress bar's lines, then one line
    assert "Traceback" not in err and err.splitlines()[-1] == (
        f"avfbp prepare: interrupted with 2 of 8 clips in {cache}; run the same command to resume")
    assert sorted(os.listdir(cache / "clips")) == ["happy__h0.npz", "happy__h1.npz"]
    assert not (cache / "index.json").exists()
    monkeypatch.undo()
    assert prepare(tmp_path / "corpus", cache) == 0
    assert "(2 new, 2 reused)" in capsys.readouterr().out
    done, expected = FeatureCache(str(cache)), FeatureCache(str(tmp_path / "uninterrupted"))
    assert done.records == expected.records and done.skipped == expected.skipped


def test_all_bad_corpus_fails_with_one_line(tmp_path, capsys):
    write_video(f"{tmp_path}/corpus/a/x.avi", face_frames(0.5, every=100)[1:])
    write_wav(f"{tmp_path}/corpus/b/y.wav", 0.5)
    assert prepare(tmp_path / "corpus", tmp_path / "cache") == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("avfbp prepare: error: no usable clip in") and "all 2 skipped" in last
    assert len(json.loads((tmp_path / "cache" / "index.json").read_text())["skipped"]) == 2

    assert prepare(tmp_path / "missing", tmp_path / "cache2") == 2
    assert capsys.readouterr().err.strip() == (
        f"avfbp prepare: error: {tmp_path / 'missing'}: not a directory")


def test_prepare_iemocap_cuts_segments_and_picks_the_speaker_half(tmp_path):
    # Dialog video 4 s at 10 fps, 320 x 160: the face sits in the left half during [1, 2.5) s.
    frames = np.full((40, 160, 320), 128, np.uint8)
    frames[10:25] = np.concatenate([face_frames(1.5), np.full((15, 160, 160), 128, np.uint8)], 2)
    dialogs = {"Ses01F_impro02": [(1.0, 2.3, "Ses01F_impro02_F000", "exc"),
                                  (1.2, 2.0, "Ses01F_impro02_M000", "sad"),
                                  (2.6, 3.5, "Ses01F_impro02_F001", "ang")]}
    write_iemocap(tmp_path / "iemocap", dialogs, dialog_frames=frames)
    assert prepare(tmp_path / "iemocap", tmp_path / "cache", "--corpus", "iemocap",
                   "--marker-actor-side", "left") == 0
    fc = FeatureCache(str(tmp_path / "cache"))
    assert [r["id"] for r in fc.records] == ["Ses01F_impro02_F000"]
    record = fc.records[0]
    assert IEMOCAP_CLASSES[record["label"]] == "happy" and record["speaker"] == "Ses01F"
    clip = fc.get(0)
    assert clip["audio"].shape == (round(1.3 * 16000),)  # the utterance wav
    assert clip["frames"].shape[0] == 13 and clip["frame_mask"].all()  # 1.3 s of the dialog
    reasons = {s["id"]: s["reason"] for s in fc.skipped}
    assert "no face found in any of 8 frames of [1.2, 2.0] s" in reasons["Ses01F_impro02_M000"]
    assert "no face found in any of 9 frames of [2.6, 3.5] s" in reasons["Ses01F_impro02_F001"]


def test_prepare_afew_uses_the_audio_track(tmp_path):
    write_afew(tmp_path / "afew", [("Train_AFEW", "Fear", "001"), ("Val_AFEW", "Sad", "002")],
               frames=face_frames(0.7), seconds=0.7)
    assert prepare(tmp_path / "afew", tmp_path / "cache", "--corpus", "afew") == 0
    fc = FeatureCache(str(tmp_path / "cache"))
    assert [(r["id"], r["label"], r["split"]) for r in fc.records] == [
        ("train/Fear/001", 2, "train"), ("val/Sad/002", 5, "val")]
    assert fc.get(1)["audio"].shape == (11200,) and fc.get(1)["frames"].shape == (7, 32, 32)


def test_load_clip_segment_of_a_video_with_its_audio_track(tmp_path):
    path = f"{tmp_path}/v.avi"
    write_video(path, face_frames(2.0, every=2), audio=tone(2.0))
    cropper = FaceCropper(32)
    clip = load_clip(path, start=0.5, end=1.5, cropper=cropper)
    assert clip["audio"].shape == (16000,) and clip["frames"].shape == (10, 32, 32)
    np.testing.assert_allclose(clip["audio"][500:-500], tone(2.0)[8500:23500], atol=2e-3)
    np.testing.assert_array_equal(clip["frame_mask"], np.arange(5, 15) % 2 == 0)
    batch = collate([clip], 20000, 12)  # what predict does with a loaded clip
    assert batch["audio_len"][0] == 16000 and batch["frame_len"][0] == 10
    np.testing.assert_array_equal(batch["frame_mask"][0, :10], clip["frame_mask"])
    assert not batch["frame_mask"][0, 10:].any() and batch["weight"][0] == 1
    whole = load_clip(path, cropper=cropper)
    assert whole["audio"].shape == (32000,) and whole["frame_mask"].sum() == 10
    with pytest.raises(MediaError, match="no face found in any of 1 frames"):
        load_clip(path, start=0.1, end=0.2, cropper=cropper)
    assert not load_clip(path, start=0.1, end=0.2, cropper=cropper,
                         require_face=False)["frame_mask"].any()


def test_prepare_stores_fer_features(tmp_path, monkeypatch):
    """--fer-features stores the FER port's per-frame features beside the crops; the cache serves
    them as frames with frame_input="fer", and they equal encoding the cached crops directly."""
    import jax

    from avfbp_jax.commands import fer_convert
    from avfbp_jax.models import fer

    crops0 = np.zeros((1, fer.INPUT_SIZE, fer.INPUT_SIZE), np.uint8)
    params = jax.tree.map(np.asarray, fer.FerEncoder().init(jax.random.key(0), crops0)["params"])
    weights = fer_convert.write_weights(params, tmp_path / "fer", sha256="0" * 64, source="random")
    monkeypatch.setenv(fer.WEIGHTS_ENV, str(weights))
    root = tmp_path / "corpus"
    write_wav(f"{root}/happy/a.wav", 1.0)
    write_video(f"{root}/happy/a.avi", face_frames(1.0, every=2))
    write_wav(f"{root}/sad/b.wav", 0.7)
    write_video(f"{root}/sad/b.avi", face_frames(0.7))
    argv = ["prepare", str(root), str(tmp_path / "cache"), "--fps", "10", "--workers", "1"]
    assert cli.main([*argv, "--crop-size", "32", "--fer-features"]) == 2  # FER wants 64x64
    assert cli.main([*argv, "--crop-size", "64", "--fer-features"]) == 0

    crops = FeatureCache(str(tmp_path / "cache"))
    feats = FeatureCache(str(tmp_path / "cache"), frame_input="fer")
    for i in range(len(crops)):
        c, f = crops.get(i), feats.get(i)
        assert f["frames"].dtype == np.float32 and f["frames"].shape == (len(c["frames"]), 128)
        np.testing.assert_allclose(f["frames"], fer.encode_crops(params, c["frames"]), atol=1e-6)
        np.testing.assert_array_equal(f["frame_mask"], c["frame_mask"])
    batch = collate([feats.get(0), feats.get(1)], 16000, 12)
    assert batch["frames"].shape == (2, 12, 128) and batch["frames"].dtype == np.float32
    assert not batch["frames"][1, batch["frame_len"][1]:].any()  # padding stays zero

    plain = tmp_path / "plain"
    assert cli.main(["prepare", str(root), str(plain), "--fps", "10", "--workers", "1"]) == 0
    with pytest.raises(ValueError, match="without FER features"):
        FeatureCache(str(plain), frame_input="fer")


def test_a_version_1_cache_is_repacked_from_its_clips(tmp_path, capsys):
    make_corpus(tmp_path / "corpus")
    cache_dir = tmp_path / "cache"
    assert prepare(tmp_path / "corpus", cache_dir) == 0
    first = FeatureCache(str(cache_dir))
    # What a version-1 prepare left: clip files and an index without packed arrays.
    with open(cache_dir / "index.json") as f:
        index = json.load(f)
    index["version"] = 1
    (cache_dir / "index.json").write_text(json.dumps(index))
    for name in os.listdir(cache_dir / "packed"):
        os.remove(cache_dir / "packed" / name)
    assert not cache_lib.is_prepared(str(cache_dir))
    capsys.readouterr()
    assert prepare(tmp_path / "corpus", cache_dir) == 0
    assert "(0 new, 4 reused)" in capsys.readouterr().out  # nothing decoded again
    assert cache_lib.is_prepared(str(cache_dir))
    again = FeatureCache(str(cache_dir), in_memory=False)
    assert again.records == first.records
    for i in range(len(first)):
        for key, value in first.get(i).items():
            np.testing.assert_array_equal(again.get(i)[key], value)
