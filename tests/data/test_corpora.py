"""Corpus readers on small replicas of each layout, built from real media files."""

import collections
import json
import os

import numpy as np
import pytest
from data_helpers import face_frames, write_afew, write_iemocap, write_video, write_wav

from avfbp_jax.data.corpora import (
    AFEW_CLASSES,
    IEMOCAP_CLASSES,
    read_afew,
    read_corpus,
    read_folder,
    read_iemocap,
    split_indices,
)

FRAMES = face_frames(0.3, side=32)


def make_folder(root, counts):
    """counts {class: n}: n stems per class, each a wav plus an avi."""
    for name, n in counts.items():
        for i in range(n):
            write_wav(os.path.join(root, name, f"s{i:02d}.wav"), 0.2)
            write_video(os.path.join(root, name, f"s{i:02d}.avi"), FRAMES)


def test_folder_pairs_stems_and_splits_deterministically(tmp_path):
    root = str(tmp_path)
    make_folder(root, {"sad": 20, "angry": 10})
    write_video(os.path.join(root, "angry", "video_only.avi"), FRAMES)
    write_wav(os.path.join(root, "sad", "audio_only.wav"), 0.2)
    (tmp_path / "sad" / "notes.txt").write_text("x")
    (tmp_path / "sad" / ".hidden.wav").write_text("x")

    corpus = read_folder(root, seed=3)
    assert corpus.classes == ["angry", "sad"]  # sorted folder names without corpus.json
    by_id = {c.id: c for c in corpus.clips}
    assert len(by_id) == 32
    assert by_id["angry/s03"].audio.endswith("angry/s03.wav")
    assert by_id["angry/s03"].video.endswith("angry/s03.avi") and by_id["angry/s03"].label == 0
    assert by_id["angry/video_only"].audio is None and by_id["sad/audio_only"].video is None
    assert corpus.dropped == {"not a media file extension: .txt": 1}
    # Stratified: 15% val and 15% test of each class.
    counts = collections.Counter((c.label, c.split) for c in corpus.clips)
    assert counts[(1, "val")] == counts[(1, "test")] == 3 and counts[(1, "train")] == 15
    assert counts[(0, "val")] == counts[(0, "test")] == 2 and counts[(0, "train")] == 7
    again = read_folder(root, seed=3)
    assert [c.split for c in again.clips] == [c.split for c in corpus.clips]
    assert [c.split for c in read_folder(root, seed=4).clips] != [c.split for c in corpus.clips]
    records = [c.record() for c in corpus.clips]
    assert list(split_indices(records, "val")) == [
        i for i, c in enumerate(corpus.clips) if c.split == "val"]


def test_folder_corpus_json_and_splits_csv(tmp_path):
    root = str(tmp_path)
    make_folder(root, {"happy": 2, "sad": 2, "extra": 1})
    (tmp_path / "corpus.json").write_text(json.dumps({"classes": ["sad", "happy"], "seed": 0}))
    (tmp_path / "splits.csv").write_text(
        "clip,split\nsad/s00,train\nsad/s01,test\nhappy/s00,val\nhappy/s01,train\ngone/x,val\n")
    corpus = read_corpus("folder", root)
    assert corpus.classes == ["sad", "happy"]
    assert {c.id: (c.label, c.split) for c in corpus.clips} == {
        "sad/s00": (0, "train"), "sad/s01": (0, "test"),
        "happy/s00": (1, "val"), "happy/s01": (1, "train")}
    assert corpus.dropped == {"folder extra/ is not a class in corpus.json": 1,
                              "listed in splits.csv without media": 1}

    (tmp_path / "splits.csv").write_text("clip,split\nsad/s00,train\n")
    with pytest.raises(ValueError, match=r"splits.csv: no split for 3 clips"):
        read_folder(root)
    (tmp_path / "splits.csv").write_text("clip,split\nsad/s00,holdout\n")
    with pytest.raises(ValueError, match=r"splits.csv:2: split 'holdout'"):
        read_folder(root)
    with pytest.raises(ValueError, match="not a directory"):
        read_folder(str(tmp_path / "nope"))


DIALOGS = {
    "Ses01F_impro01": [(1.0, 2.2, "Ses01F_impro01_F000", "neu"),
                       (2.5, 3.1, "Ses01F_impro01_M000", "exc"),
                       (3.2, 4.0, "Ses01F_impro01_F001", "fru"),
                       (4.1, 5.0, "Ses01F_impro01_M001", "ang")],
    "Ses02M_script01_1": [(0.5, 1.5, "Ses02M_script01_1_F000", "sad"),
                          (1.6, 2.4, "Ses02M_script01_1_M000", "hap"),
                          (2.5, 3.0, "Ses02M_script01_1_M001", "xxx")],
}


def test_iemocap_utterances_labels_speakers_and_folds(tmp_path):
    root = str(tmp_path)
    write_iemocap(root, DIALOGS, dialog_frames=face_frames(0.5, side=32))
    corpus = read_iemocap(root)
    assert corpus.classes == list(IEMOCAP_CLASSES)
    clips = {c.id: c for c in corpus.clips}
    assert list(clips) == ["Ses01F_impro01_F000", "Ses01F_impro01_M000", "Ses01F_impro01_M001",
                           "Ses02M_script01_1_F000", "Ses02M_script01_1_M000"]
    assert [IEMOCAP_CLASSES[c.label] for c in clips.values()] == [
        "neutral", "happy", "angry", "sad", "happy"]
    assert corpus.dropped == {"label fru not used": 1, "label xxx not used": 1}
    c = clips["Ses01F_impro01_M000"]
    assert (c.start, c.end) == (2.5, 3.1) and c.region is None
    assert c.audio == os.path.join(root, "Session1", "sentences", "wav", "Ses01F_impro01",
                                   "Ses01F_impro01_M000.wav")
    assert c.video == os.path.join(root, "Session1", "dialog", "avi", "DivX", "Ses01F_impro01.avi")
    assert all(os.path.exists(p) for p in (c.audio, c.video))
    assert c.record() == {"id": "Ses01F_impro01_M000", "label": 1, "split": "session1",
                          "session": 1, "speaker": "Ses01M", "dialog": "Ses01F_impro01",
                          "start": 2.5, "end": 3.1}
    assert clips["Ses02M_script01_1_F000"].fields["speaker"] == "Ses02F"

    records = [c.record() for c in corpus.clips]
    assert list(split_indices(records, "train", test_session=2)) == [0, 1, 2]
    assert list(split_indices(records, "val", test_session=2)) == [3, 4]
    assert list(split_indices(records, "test", test_session=1)) == [0, 1, 2]
    with pytest.raises(ValueError, match="test_session must be 1..5"):
        split_indices(records, "train", test_session=0)

    strict = read_iemocap(root, excited_as_happy=False)
    assert "Ses01F_impro01_M000" not in {c.id for c in strict.clips}
    assert strict.dropped["label exc not used"] == 1
    # The dialog id names the marker actor (Ses01F: F, Ses02M: M); the speaker's half follows.
    sided = {c.id: c.region for c in read_iemocap(root, marker_actor_side="left").clips}
    assert sided == {"Ses01F_impro01_F000": "left", "Ses01F_impro01_M000": "right",
                     "Ses01F_impro01_M001": "right", "Ses02M_script01_1_F000": "right",
                     "Ses02M_script01_1_M000": "left"}
    # "auto": every clip's half is decided from its data at prepare time.
    auto = {c.region for c in read_iemocap(root, marker_actor_side="auto").clips}
    assert auto == {"speaking"}
    with pytest.raises(ValueError, match="marker_actor_side must be one of"):
        read_iemocap(root, marker_actor_side="middle")
    with pytest.raises(ValueError, match="not an IEMOCAP release"):
        read_iemocap(str(tmp_path / "Session1"))


def test_afew_folders(tmp_path):
    root = str(tmp_path)
    write_afew(root, [("Train_AFEW", "Angry", "000046280"), ("Train_AFEW", "Surprise", "0101"),
                      ("Val_AFEW", "Happy", "000149120"), ("Val_AFEW", "Contempt", "x")],
               frames=face_frames(0.3, side=32), seconds=0.3)
    corpus = read_corpus("afew", root)
    assert corpus.classes == list(AFEW_CLASSES)
    assert [(c.id, AFEW_CLASSES[c.label], c.split, c.audio) for c in corpus.clips] == [
        ("train/Angry/000046280", "Angry", "train", None),
        ("train/Surprise/0101", "Surprise", "train", None),
        ("val/Happy/000149120", "Happy", "val", None)]
    assert corpus.clips[2].video == os.path.join(root, "Val_AFEW", "Happy", "000149120.avi")
    assert corpus.dropped == {"folder Val_AFEW/Contempt is not an AFEW emotion": 1}
    records = [c.record() for c in corpus.clips]
    np.testing.assert_array_equal(split_indices(records, "val"), [2])
    with pytest.raises(ValueError, match="no videos in Train_AFEW"):
        read_afew(str(tmp_path / "Train_AFEW"))
    with pytest.raises(ValueError, match="unknown corpus kind"):
        read_corpus("voxceleb", root)
