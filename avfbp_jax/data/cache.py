"""The feature cache that `avfbp prepare` writes and the loader reads.

Layout of CACHE_DIR:
  settings.json      the preprocessing settings, written first (prepare refuses to mix others)
  clips/<name>.npz   one per clip: audio int16 [S] (16 kHz), crops uint8 [T, S, S], found bool [T],
                     and with `prepare --fer-features` also fer float32 [T, 128] (the FER port's
                     per-frame features of the crops)
  packed/            every record's arrays end to end, what the loader reads (memory-mapped):
                     audio.int16 [sum S], crops.uint8 [sum T, S, S], found.bool [sum T], and
                     fer.float32 [sum T, 128] when the clips carry FER features
  index.json         {"version", "classes", "settings", "packed", "records", "skipped",
                     "dropped"}; each record is {"id", "label", "split", "file", "audio_len",
                     "num_frames", "num_faces", "audio_offset", "frame_offset"} plus corpus
                     fields (session, speaker, ...); "packed" gives the packed arrays' shapes;
                     "skipped" is the manifest of clips that could not be used, {"id",
                     "reason"} each; "dropped" counts what the corpus reader left out, by reason.

The per-clip files are the unit of work and of resuming; the packed files are the unit of
reading. Reading a clip from the packed files is a slice of a memory map: no per-clip file to
open and parse (np.load of an .npz holds the GIL and managed ~1,600 clips/s on one core of the
development machine, far below what an accelerator's step consumes), and the operating system's
page cache keeps what fits in memory. Every file and the packed folder are written atomically
(avfbp_jax.atomic), so an interrupted `prepare` leaves only whole clip files (which the next run
reuses) and either the old index and packed folder or the new ones; index.json is written last,
so its presence marks a finished run.
"""

import contextlib
import json
import os
import re
import zipfile
from collections.abc import Sequence

import numpy as np

from avfbp_jax import atomic

VERSION = 2  # 2: packed arrays (version-1 caches are re-packed by `avfbp prepare`)
INDEX = "index.json"
PACKED = "packed"
# Packed array name -> (clip array it concatenates, file suffix = its dtype).
PACKED_ARRAYS = {"audio": "int16", "crops": "uint8", "found": "bool", "fer": "float32"}
# Cached audio is int16 PCM: float x in [-1, 1] is stored as round(x * PCM_SCALE). The loader
# keeps it int16 (half the host->device bytes of float32); the model scales it back on device.
PCM_SCALE = 32767.0
CLIPS = "clips"


def pcm16(audio: np.ndarray) -> np.ndarray:
    """A float waveform in [-1, 1] as the int16 PCM the cache stores and the loader sends."""
    return np.round(np.clip(audio, -1.0, 1.0) * PCM_SCALE).astype(np.int16)


def clip_file(clip_id: str) -> str:
    """The cache-relative file name of a clip: its id with path separators made safe."""
    return f"{CLIPS}/{re.sub(r'[^A-Za-z0-9_.-]', '_', clip_id.replace('/', '__'))}.npz"


def write_clip(cache_dir: str, clip_id: str, audio: np.ndarray, crops: np.ndarray,
               found: np.ndarray, fer: np.ndarray | None = None) -> str:
    """Writes one clip's arrays atomically; audio float in [-1, 1] is stored as int16."""
    name = clip_file(clip_id)
    arrays = {"audio": pcm16(audio),
              "crops": crops.astype(np.uint8), "found": found.astype(bool)}
    if fer is not None:
        arrays["fer"] = fer.astype(np.float32)
    atomic.write(os.path.join(cache_dir, name), lambda f: np.savez(f, **arrays))
    return name


def packed_file(cache_dir: str, name: str) -> str:
    return os.path.join(cache_dir, PACKED, f"{name}.{PACKED_ARRAYS[name]}")


def _pack(cache_dir: str, records: list[dict]) -> tuple[list[dict], dict]:
    """Writes the packed folder of `records` (their clip files, in order); returns the records
    with audio_offset and frame_offset, and the packed shapes for the index."""
    names = ["audio", "crops", "found"]
    shapes = {}
    if records:
        with np.load(os.path.join(cache_dir, records[0]["file"])) as z:
            names += ["fer"] if "fer" in z.files else []
            shapes = {n: list(z[n].shape[1:]) for n in names}
    out, audio_offset, frame_offset = [], 0, 0
    with atomic.directory(os.path.join(cache_dir, PACKED)) as tmp, contextlib.ExitStack() as stack:
        handles = {n: stack.enter_context(open(os.path.join(tmp, f"{n}.{PACKED_ARRAYS[n]}"), "wb"))
                   for n in names}
        for record in records:
            with np.load(os.path.join(cache_dir, record["file"])) as z:
                for n in names:
                    handles[n].write(np.ascontiguousarray(z[n], PACKED_ARRAYS[n]).tobytes())
            out.append({**record, "audio_offset": audio_offset, "frame_offset": frame_offset})
            audio_offset += record["audio_len"]
            frame_offset += record["num_frames"]
    return out, {"arrays": names, "shapes": shapes, "samples": audio_offset,
                 "frames": frame_offset}


def write_index(cache_dir: str, classes: Sequence[str], settings: dict, records: list[dict],
                skipped: list[dict], dropped: dict[str, int] | None = None) -> None:
    """Packs the records' clip files (see the module docstring), then writes index.json
    atomically."""
    records, packed = _pack(cache_dir, records)
    index = {"version": VERSION, "classes": list(classes), "settings": settings,
             "packed": packed, "records": records, "skipped": skipped, "dropped": dropped or {}}
    atomic.write_json(os.path.join(cache_dir, INDEX), index)


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
    if not isinstance(index, dict) or "version" not in index:
        raise ValueError(f"{path}: not an avfbp feature cache index")
    if index["version"] != VERSION:
        raise ValueError(f"{path}: a version-{index['version']} feature cache; this code reads "
                         f"version {VERSION}: re-run `avfbp prepare` into it (it reuses the "
                         "decoded clips)")
    return index


def is_prepared(cache_dir: str) -> bool:
    """Whether CACHE_DIR holds a finished cache of the version this code reads (`avfbp prepare`
    turns an older one into it, reusing its decoded clips)."""
    try:
        with open(os.path.join(cache_dir, INDEX)) as f:
            return json.load(f).get("version") == VERSION
    except (OSError, ValueError, AttributeError):
        return False


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
    float32 per-frame features (a cache prepared with `--fer-features`). The packed arrays are
    memory-mapped (in_memory=False: the page cache holds what fits) or read into host memory
    once (in_memory=True); get() returns views of them, safe to call from several threads.
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
        self._arrays = self._open(index["packed"], in_memory) if self.records else {}

    def _open(self, packed: dict, in_memory: bool) -> dict[str, np.ndarray]:
        """The packed arrays, checked against the sizes the index promises."""
        frames_name = "crops" if self.frame_input == "crops" else "fer"
        arrays = {}
        for name in ("audio", frames_name, "found"):
            rows = packed["samples"] if name == "audio" else packed["frames"]
            shape = (rows, *packed["shapes"][name])
            path = packed_file(self.cache_dir, name)
            expected = int(np.prod(shape)) * np.dtype(PACKED_ARRAYS[name]).itemsize
            size = os.path.getsize(path) if os.path.exists(path) else None
            if size != expected:
                raise ValueError(f"{path}: {'missing' if size is None else f'{size} bytes'}, "
                                 f"expected {expected}; re-run `avfbp prepare` into "
                                 f"{self.cache_dir}")
            if in_memory:
                arrays[name] = np.fromfile(path, PACKED_ARRAYS[name]).reshape(shape)
            else:
                arrays[name] = np.memmap(path, PACKED_ARRAYS[name], "r", shape=shape)
        arrays["frames"] = arrays.pop(frames_name)
        return arrays

    def __len__(self) -> int:
        return len(self.records)

    def durations(self) -> np.ndarray:
        """Seconds spanned by each clip: the longer of its audio and its frames."""
        return np.maximum(self.audio_len / self.sample_rate, self.num_frames / self.fps)

    def get(self, i: int) -> dict[str, np.ndarray]:
        """Clip i: audio int16 [S] (PCM, see PCM_SCALE), frames uint8 [T, S, S] (or float32
        [T, D] FER features), frame_mask bool [T]: views of the packed arrays."""
        record = self.records[i]
        a, f = record["audio_offset"], record["frame_offset"]
        t = record["num_frames"]
        return {"audio": self._arrays["audio"][a:a + record["audio_len"]],
                "frames": self._arrays["frames"][f:f + t],
                "frame_mask": self._arrays["found"][f:f + t]}
