"""Corpus readers: the clips of a corpus on disk, with labels and split fields, no decoding.

Three layouts (design brief 3.1):
  folder   ROOT/<class>/<stem>.<ext>; the same stem pairs an audio file with a video file
           (a video alone is fine: its audio track is used); optional ROOT/splits.csv
           (`clip,split`, clip = "<class>/<stem>") else a seeded stratified split; class order
           from ROOT/corpus.json "classes" if present, else sorted folder names. `avfbp synth`
           writes this layout.
  iemocap  the IEMOCAP release: SessionN/dialog/EmoEvaluation/<dialog>.txt gives each
           utterance's [start - end] time and label; audio SessionN/sentences/wav/<dialog>/
           <utt>.wav; video the segment [start, end] of SessionN/dialog/avi/DivX/<dialog>.avi.
  afew     AFEW (EmotiW): Train_AFEW/<Emotion>/*.avi and Val_AFEW/<Emotion>/*.avi, the audio
           being the track inside each video.
Missing media files are not checked here: prepare lists them in its manifest with the rest.
"""

import collections
import csv
import dataclasses
import json
import os
import re
from collections.abc import Sequence

import numpy as np

from avfbp_jax.data.config import MARKER_ACTOR_SIDES

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3", ".m4a")
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".mpeg")
IEMOCAP_CLASSES = ("neutral", "happy", "angry", "sad")
IEMOCAP_CODES = {"neu": "neutral", "hap": "happy", "ang": "angry", "sad": "sad"}
AFEW_CLASSES = ("Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise")
AFEW_SPLITS = {"Train_AFEW": "train", "Val_AFEW": "val"}
SPLITS = ("train", "val", "test")
_EMO_LINE = re.compile(r"^\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]\s+(Ses\d\d[FM]_\S+)\s+(\w+)\s+\[")


@dataclasses.dataclass(frozen=True)
class Clip:
    """One example. audio None: use the video's audio track. start/end (seconds) cut a segment
    of the video (and of its audio track when that is the audio source); None: the whole file.
    region "left"/"right" restricts face search to that half of the frame."""

    id: str
    label: int
    audio: str | None
    video: str | None
    split: str
    start: float | None = None
    end: float | None = None
    region: str | None = None
    fields: dict = dataclasses.field(default_factory=dict)  # session, speaker, dialog, ...

    def record(self) -> dict:
        """The JSON fields the cache keeps for this clip."""
        return {"id": self.id, "label": self.label, "split": self.split, **self.fields}


@dataclasses.dataclass
class Corpus:
    """The clips of a corpus plus what the reader left out (reason -> count)."""

    kind: str
    root: str
    classes: list[str]
    clips: list[Clip]
    dropped: dict[str, int]


def _visible(names: Sequence[str]) -> list[str]:
    return sorted(n for n in names if not n.startswith("."))


def _stratified_splits(labels: Sequence[int], seed: int, val_fraction: float,
                       test_fraction: float) -> list[str]:
    """A deterministic per-class split: each class's clips shuffled with the seed, then cut."""
    splits = ["train"] * len(labels)
    rng = np.random.default_rng(seed)
    for c in sorted(set(labels)):
        members = [i for i, label in enumerate(labels) if label == c]
        members = [members[j] for j in rng.permutation(len(members))]
        n_val, n_test = round(len(members) * val_fraction), round(len(members) * test_fraction)
        for i in members[:n_val]:
            splits[i] = "val"
        for i in members[n_val:n_val + n_test]:
            splits[i] = "test"
    return splits


def _read_splits_csv(path: str) -> dict[str, str]:
    splits = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"clip", "split"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: expected a header `clip,split`")
        for line, row in enumerate(reader, start=2):
            if row["split"] not in SPLITS:
                raise ValueError(f"{path}:{line}: split {row['split']!r} not one of {SPLITS}")
            splits[row["clip"]] = row["split"]
    return splits


def read_folder(root: str, *, seed: int = 0, val_fraction: float = 0.15,
                test_fraction: float = 0.15) -> Corpus:
    """A folder-per-class corpus (the layout `avfbp synth` writes)."""
    if not os.path.isdir(root):
        raise ValueError(f"{root}: not a directory")
    meta_path = os.path.join(root, "corpus.json")
    folders = [n for n in _visible(os.listdir(root)) if os.path.isdir(os.path.join(root, n))]
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            classes = list(json.load(f)["classes"])
    else:
        classes = folders
    if not classes:
        raise ValueError(f"{root}: no class folders")
    dropped = collections.Counter()
    for name in set(folders) - set(classes):
        dropped[f"folder {name}/ is not a class in corpus.json"] += 1
    items = []  # (clip id, label, audio, video)
    for label, name in enumerate(classes):
        folder = os.path.join(root, name)
        stems: dict[str, dict[str, str]] = collections.defaultdict(dict)
        for file in _visible(os.listdir(folder)) if os.path.isdir(folder) else []:
            stem, ext = os.path.splitext(file)
            kind = ("audio" if ext.lower() in AUDIO_EXTENSIONS
                    else "video" if ext.lower() in VIDEO_EXTENSIONS else None)
            if kind is None:
                dropped[f"not a media file extension: {ext or file}"] += 1
            elif kind in stems[stem]:
                raise ValueError(f"{folder}: two {kind} files with stem {stem!r}")
            else:
                stems[stem][kind] = os.path.join(folder, file)
        for stem, files in sorted(stems.items()):
            items.append((f"{name}/{stem}", label, files.get("audio"), files.get("video")))
    splits_path = os.path.join(root, "splits.csv")
    if os.path.exists(splits_path):
        given = _read_splits_csv(splits_path)
        missing = [i for i, *_ in items if i not in given]
        if missing:
            raise ValueError(f"{splits_path}: no split for {len(missing)} clips, e.g. {missing[0]}")
        splits = [given[i] for i, *_ in items]
        dropped["listed in splits.csv without media"] += len(set(given) - {i for i, *_ in items})
    else:
        splits = _stratified_splits([it[1] for it in items], seed, val_fraction, test_fraction)
    clips = [Clip(id=i, label=label, audio=audio, video=video, split=split)
             for (i, label, audio, video), split in zip(items, splits, strict=True)]
    return Corpus("folder", root, classes, clips, +dropped)


def read_iemocap(root: str, *, excited_as_happy: bool = True,
                 marker_actor_side: str = "") -> Corpus:
    """IEMOCAP's release layout: 4 classes, utterances from EmoEvaluation, video cut per utterance.

    marker_actor_side ("left"/"right"/""/"auto"): where the actor named in the dialog id
    (SesNNF/M) sits in the dialog video; when set, faces are searched only in the speaking actor's
    half. "auto": each clip's half is decided from its data (data.speaking_side: the face whose
    mouth moves with the speech).
    """
    if marker_actor_side not in MARKER_ACTOR_SIDES:
        raise ValueError(f"marker_actor_side must be one of {MARKER_ACTOR_SIDES}: "
                         f"{marker_actor_side!r}")
    codes = dict(IEMOCAP_CODES, **({"exc": "happy"} if excited_as_happy else {}))
    names = _visible(os.listdir(root)) if os.path.isdir(root) else []
    sessions = [n for n in names if re.fullmatch(r"Session[1-5]", n)]
    if not sessions:
        raise ValueError(f"{root}: no Session1..Session5 folders (not an IEMOCAP release)")
    clips, dropped = [], collections.Counter()
    other_side = {"left": "right", "right": "left"}
    for session_dir in sessions:
        session = int(session_dir[-1])
        base = os.path.join(root, session_dir)
        emo_dir = os.path.join(base, "dialog", "EmoEvaluation")
        files = _visible(os.listdir(emo_dir)) if os.path.isdir(emo_dir) else []
        for file in (f for f in files if f.endswith(".txt")):
            dialog = file[:-4]
            video = os.path.join(base, "dialog", "avi", "DivX", f"{dialog}.avi")
            with open(os.path.join(emo_dir, file), errors="replace") as f:
                for line in f:
                    m = _EMO_LINE.match(line)
                    if not m:
                        continue
                    start, end, utt, code = float(m[1]), float(m[2]), m[3], m[4]
                    if code not in codes:
                        dropped[f"label {code} not used"] += 1
                        continue
                    actor = utt.rsplit("_", 1)[1][0]  # Ses01F_impro01_M003 -> M
                    region = None
                    if marker_actor_side == "auto":
                        region = "speaking"
                    elif marker_actor_side:
                        marker = utt[5]  # the actor named in the dialog id
                        region = marker_actor_side if actor == marker else \
                            other_side[marker_actor_side]
                    clips.append(Clip(
                        id=utt,
                        label=IEMOCAP_CLASSES.index(codes[code]),
                        audio=os.path.join(base, "sentences", "wav", dialog, f"{utt}.wav"),
                        video=video, split=f"session{session}", start=start, end=end,
                        region=region,
                        fields={"session": session, "speaker": f"Ses{session:02d}{actor}",
                                "dialog": dialog, "start": start, "end": end}))
    if not clips:
        raise ValueError(f"{root}: no usable utterances in SessionN/dialog/EmoEvaluation/*.txt")
    return Corpus("iemocap", root, list(IEMOCAP_CLASSES), clips, +dropped)


def read_afew(root: str) -> Corpus:
    """AFEW: Train_AFEW and Val_AFEW, one folder per emotion, audio inside each video."""
    clips, dropped = [], collections.Counter()
    for folder, split in AFEW_SPLITS.items():
        base = os.path.join(root, folder)
        for name in _visible(os.listdir(base)) if os.path.isdir(base) else []:
            if name not in AFEW_CLASSES:
                dropped[f"folder {folder}/{name} is not an AFEW emotion"] += 1
                continue
            for file in _visible(os.listdir(os.path.join(base, name))):
                stem, ext = os.path.splitext(file)
                if ext.lower() not in VIDEO_EXTENSIONS:
                    dropped[f"not a video file extension: {ext or file}"] += 1
                    continue
                clips.append(Clip(id=f"{split}/{name}/{stem}", label=AFEW_CLASSES.index(name),
                                  audio=None, video=os.path.join(base, name, file), split=split))
    if not clips:
        raise ValueError(f"{root}: no videos in Train_AFEW/<Emotion>/ or Val_AFEW/<Emotion>/")
    return Corpus("afew", root, list(AFEW_CLASSES), clips, +dropped)


def read_corpus(kind: str, root: str, *, excited_as_happy: bool = True,
                marker_actor_side: str = "", seed: int = 0) -> Corpus:
    """Dispatches to the reader of a corpus kind (data_config().corpus)."""
    if kind == "folder":
        return read_folder(root, seed=seed)
    if kind == "iemocap":
        return read_iemocap(root, excited_as_happy=excited_as_happy,
                            marker_actor_side=marker_actor_side)
    if kind == "afew":
        return read_afew(root)
    raise ValueError(f"unknown corpus kind {kind!r}; expected folder, iemocap or afew")


def split_indices(records: Sequence[dict], split: str, *, test_session: int = 5) -> np.ndarray:
    """Indices of the records in split ("train", "val" or "test").

    Records with a session (IEMOCAP) are split by session: "train" is every session but
    test_session, "val" and "test" are test_session (1..5 are the leave-one-session-out folds,
    5 the usual hold-out). Other records carry their own "split" field.
    """
    if records and all("session" in r for r in records):
        if test_session not in (1, 2, 3, 4, 5):
            raise ValueError(f"test_session must be 1..5 for IEMOCAP, got {test_session}")
        held_out = np.array([r["session"] == test_session for r in records], bool)
        return np.flatnonzero(~held_out if split == "train" else held_out)
    return np.flatnonzero(np.array([r["split"] == split for r in records], bool))
