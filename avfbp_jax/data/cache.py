"""The feature cache that `avfbp prepare` writes and the loader reads.

Layout of CACHE_DIR:
  settings.json      the preprocessing settings, written first (prepare refuses to mix others)
  clips/<name>.npz   one per clip: audio int16 [S] (16 kHz), crops uint8 [T, S, S], found bool [T],
                     and with `prepare --fer-features` also fer float32 [T, 128] (the FER port's
                     per-frame features of the crops)
  index.json         {"version", "classes", "settings", "records", "skipped", "dropped"}; each
                     record is {"id", "label", "split", "file", "audio_len", "num_frames",
                     "num_faces"} plus corpus fields (session, speaker, ...); "skipped" is the
                     manifest of clips that could not be used, {"id", "reason"} each; "dropped"
                     counts what the corpus reader left out, by reason (e.g. unused labels).

Every file is written under a temporary name in the same folder and then renamed, so an
interrupted `prepare` leaves only whole clip files (which the next run reuses) and either the
old index or the new one; index.json is written last, so its presence marks a finished run.
"""

import json
import os
import re
import tempfile
import threading
import zipfile
from collections.abc import Sequence
from typing import Any

import numpy as np

VERSION = 1
INDEX = "index.json"
# Cached audio is int16 PCM: float x in [-1, 1] is stored as round(x * PCM_SCALE). The loader
# keeps it int16 (half the host->device bytes of float32); the model scales it back on device.
PCM_SCALE = 32767.0
CLIPS = "clips"
TMP_PREFIX = ".tmp-"


def atomic_write(path: str, write: Any) -> None:
    """Calls write(file_object) on a temporary file next to path, then renames it to path."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def clip_file(clip_id: str) -> str:
    """The cache-relative file name of a clip: its id with path separators made safe."""
    return f"{CLIPS}/{re.sub(r'[^A-Za-z0-9_.-]', '_', clip_id.replace('/', '__'))}.npz"


def write_clip(cache_dir: str, clip_id: str, audio: np.ndarray, crops: np.ndarray,
               found: np.ndarray, fer: np.ndarray | None = None) -> str:
    """Writes one clip's arrays atomically; audio float in [-1, 1] is stored as int16."""
    name = clip_file(clip_id)
    arrays = {"audio": np.round(np.clip(audio, -1.0, 1.0) * PCM_SCALE).astype(np.int16),
              "crops": crops.astype(np.uint8), "found": found.astype(bool)}
    if fer is not None:
        arrays["fer"] = fer.astype(np.float32)
    atomic_write(os.path.join(cache_dir, name), lambda f: np.savez(f, **arrays))
    return name


def write_index(cache_dir: str, classes: Sequence[str], settings: dict, records: list[dict],
                skipped: list[dict], dropped: dict[str, int] | None = None) -> None:
    """Writes index.json atomically."""
    index = {"version": VERSION, "classes": list(classes), "settings": settings,
             "records": records, "skipped": skipped, "dropped": dropped or {}}
    data = json.dumps(index, indent=1).encode()
    atomic_write(os.path.join(cache_dir, INDEX), lambda f: f.write(data))


def read_index(cache_dir: str) -> dict:
    """Reads index.json; raises ValueError naming the file if it is missing or not a cache index."""
    path = os.path.join(cache_dir, INDEX)
    try:
        with open(path) as f:
            index = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{path}: no feature cache here (run `avfbp prepare` first)") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable cache index ({e})") from None
    if not isinstance(index, dict) or index.get("version") != VERSION:
        raise ValueError(f"{path}: not a version-{VERSION} avfbp feature cache index")
    return index


def clip_summary(cache_dir: str, name: str) -> dict[str, int] | None:
    """audio_len, num_frames and num_faces of a written clip file (reading the audio's header
    only); None if the file is missing or unreadable."""
    try:
        with np.load(os.path.join(cache_dir, name)) as z:
            found = z["found"]
            with z.zip.open("audio.npy") as f:
                version = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                (audio_len,) = read_header(f)[0]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    return {"audio_len": int(audio_len), "num_frames": len(found), "num_faces": int(found.sum())}


FRAME_INPUTS = ("crops", "fer")  # what FeatureCache.get returns as "frames"


class FeatureCache:
    """Read access to a prepared cache: records, classes, settings and per-clip arrays.

    frame_input "crops" serves the uint8 face crops as frames; "fer" serves the FER port's
    float32 per-frame features (a cache prepared with `--fer-features`). With in_memory=True
    each clip's arrays stay in host memory after first use (safe to call from the loader's
    prefetch thread); otherwise each get() reads the clip's file again.
    """

    def __init__(self, cache_dir: str, in_memory: bool = True, frame_input: str = "crops"):
        index = read_index(cache_dir)
        if frame_input not in FRAME_INPUTS:
            raise ValueError(f"frame_input must be one of {FRAME_INPUTS}, got {frame_input!r}")
        if frame_input == "fer" and not index["settings"].get("fer_features"):
            raise ValueError(f"{cache_dir}: prepared without FER features; run `avfbp prepare "
                             "--fer-features` into a new cache directory")
        self.frame_input = frame_input
        self.cache_dir = cache_dir
        self.classes: list[str] = index["classes"]
        self.settings: dict = index["settings"]
        self.records: list[dict] = index["records"]
        self.skipped: list[dict] = index["skipped"]
        self.dropped: dict[str, int] = index.get("dropped", {})
        self.sample_rate = int(self.settings["sample_rate"])
        self.fps = float(self.settings["fps"])
        self.audio_len = np.array([r["audio_len"] for r in self.records], np.int64)
        self.num_frames = np.array([r["num_frames"] for r in self.records], np.int64)
        self.labels = np.array([r["label"] for r in self.records], np.int32)
        self._memory: dict[int, dict] | None = {} if in_memory else None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.records)

    def durations(self) -> np.ndarray:
        """Seconds spanned by each clip: the longer of its audio and its frames."""
        return np.maximum(self.audio_len / self.sample_rate, self.num_frames / self.fps)

    def get(self, i: int) -> dict[str, np.ndarray]:
        """Clip i: audio int16 [S] (PCM, see PCM_SCALE), frames uint8 [T, S, S] (or float32
        [T, D] FER features), frame_mask bool [T]."""
        if self._memory is not None:
            with self._lock:
                clip = self._memory.get(i)
            if clip is not None:
                return clip
        path = os.path.join(self.cache_dir, self.records[i]["file"])
        try:
            with np.load(path) as z:
                clip = {
                    "audio": z["audio"],
                    "frames": z["crops"] if self.frame_input == "crops" else z["fer"],
                    "frame_mask": z["found"],
                }
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
            raise ValueError(f"{path}: unreadable cached clip ({e}); re-run `avfbp prepare`") from e
        if self._memory is not None:
            with self._lock:
                self._memory[i] = clip
        return clip
