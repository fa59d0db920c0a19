"""The embedded synthetic audio-visual corpora (written by `avfbp synth OUT_DIR [--task TASK]`).

Writes real media files in the folder corpus layout: OUT_DIR/<class>/<stem>.wav (16 kHz, 16-bit
PCM mono) and OUT_DIR/<class>/<stem>.avi (grayscale Motion-JPEG in AVI at 10 fps, 128x128,
written by cv2.VideoWriter, read back by OpenCV and by PyAV/FFmpeg), plus OUT_DIR/splits.csv
(`clip,split`) and OUT_DIR/corpus.json (classes in label order, seed, counts, settings, generator
version, and the task unless it is "emotion"). Clip i is generated from its own generator seeded
by (seed, i): the same seed and options give the same bytes, whatever the order or the number of
worker processes, and an interrupted run is finished by the next one with the bytes of an
uninterrupted run. The media are rendered by avfbp_jax.data.synth_media.

Two tasks (TASKS): "emotion", the default, described below, and "cooccurrence"
(avfbp_jax.data.cooccurrence), whose label says whether an audio event and a facial event
overlap in time.

Design of the emotion cues (the knobs are the `Cues` fields; `avfbp synth --audio-cue/--video-cue`
scale them):

* Every clip has a speaker identity drawn at random (base pitch 90-240 Hz, vocal-tract length,
  speaking rate, breathiness, loudness; face size, skin and hair tone, eye/brow/mouth geometry,
  resting mouth curvature and brow slant, head pose, lighting, camera noise). Identity variation
  is larger than some of the cues, so no single raw statistic gives the class away.
* The emotion is expressed only inside one contiguous segment covering a random 30-70% of the
  clip, with 0.15 s ramps; the rest of the clip is neutral. The segment is the same in audio and
  video, so attention and trunk-level pooling have something to find.
* Audio carries AROUSAL: inside the segment, happy and angry raise pitch (x1.7), widen the
  pitch accents, speed up the syllable rate (+80%), add energy (+12 dB) and flatten the spectral
  tilt (tense voice); neutral and sad are produced identically. Audio alone therefore separates
  {happy, angry} from {neutral, sad} but is at chance within each pair.
* Video carries the MOUTH SHAPE (valence-like): smile for happy, frown for angry and sad, flat
  for neutral, so video alone separates happy and neutral but confuses angry with sad. A weak,
  noisy brow cue (angry lowers the inner brows, sad raises them) leaves some of that confusion.
* Together the two streams separate all four classes (happy = aroused smile, angry = aroused
  frown, sad = calm frown, neutral = calm flat).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile as sf

from avfbp_jax import atomic, interrupt
from avfbp_jax.data import cooccurrence
from avfbp_jax.data.pool import process_map
from avfbp_jax.data.synth_media import (
    FPS,
    FRAME_SIZE,
    SAMPLE_RATE,
    Cues,
    face_video,
    frame_times,
    segment_weight,
    synth_audio,
    write_video,
)

CORPUS_NAME = "avfbp-synthetic"
GENERATOR_VERSION = 2
DEFAULT_CLIPS = 560
DEFAULT_CLASSES = ("neutral", "happy", "angry", "sad")
DEFAULT_CUES = Cues()
SPLIT_FRACTIONS = (0.7, 0.15, 0.15)  # train, val, test (stratified per class)
TMP_DIR = ".synth-tmp"  # in OUT_DIR while the corpus is unfinished: temporary files, settings
SETTINGS_FILE = "settings.json"  # in TMP_DIR, written first: which corpus is being written

# Per emotion: (arousal, mouth curvature: +1 smile / -1 frown, inner-brow raise: +1 up / -1 down)
EMOTIONS = {
    "neutral": (0.0, 0.0, 0.0),
    "happy": (1.0, 1.0, 0.0),
    "angry": (1.0, -1.0, -1.0),
    "sad": (0.0, -1.0, 1.0),
}


def generate_clip(
    seed: int, index: int, emotion: str, cues: Cues = DEFAULT_CUES
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Clip `index` of the corpus for `seed`: (float32 audio [S], uint8 frames [T, H, W], info).

    info records the duration, the emotional segment (s) and the expression intensity.
    """
    arousal_level, smile, brow = EMOTIONS[emotion]
    rng = np.random.default_rng([seed, index])
    duration, start, stop, intensity = _clip_timing(rng, cues)
    audio_rng, video_rng = (np.random.default_rng(s) for s in rng.integers(2**63, size=2))

    n = int(round(duration * SAMPLE_RATE))
    weight = intensity * segment_weight(np.arange(n) / SAMPLE_RATE, start, stop)
    audio, envelope = synth_audio(audio_rng, duration, arousal_level * weight, cues)
    times = frame_times(duration)
    face_weight = intensity * segment_weight(times, start, stop)
    frames = face_video(video_rng, times, envelope, cues.smile_gain * smile * face_weight,
                        cues.brow_gain * brow * face_weight, cues)
    return audio, frames, _info(duration, start, stop, intensity)


def _clip_timing(rng: np.random.Generator, cues: Cues) -> tuple[float, float, float, float]:
    """The first draws of a clip's generator: duration, emotional segment start and stop (s),
    expression intensity."""
    duration = round(rng.uniform(cues.min_seconds, cues.max_seconds), 2)
    fraction = rng.uniform(*cues.segment_fraction)
    start = rng.uniform(0.0, duration * (1.0 - fraction))
    return duration, start, start + fraction * duration, rng.uniform(*cues.intensity)


def _info(duration: float, start: float, stop: float, intensity: float) -> dict:
    return {"duration": duration, "segment": [round(start, 3), round(stop, 3)],
            "intensity": round(intensity, 3)}


def clip_info(seed: int, index: int, cues: Cues = DEFAULT_CUES) -> dict:
    """The info that generate_clip(seed, index, ...) returns, without generating the clip."""
    return _info(*_clip_timing(np.random.default_rng([seed, index]), cues))


class Task(NamedTuple):
    """A corpus task: the class names it knows, its defaults, and its per-clip functions."""

    names: tuple[str, ...]  # a corpus's classes are 2+ distinct ones of these, in label order
    classes: tuple[str, ...]  # default classes
    cues: Cues  # default cues
    generate: Callable[[int, int, str, Cues], tuple[np.ndarray, np.ndarray, dict]]
    info: Callable[[int, int, str, Cues], dict]  # generate's info, without generating the clip


TASKS = {
    "emotion": Task(tuple(EMOTIONS), DEFAULT_CLASSES, DEFAULT_CUES, generate_clip,
                    lambda seed, index, emotion, cues: clip_info(seed, index, cues)),
    "cooccurrence": Task(cooccurrence.CLASSES, cooccurrence.CLASSES, cooccurrence.CUES,
                         cooccurrence.generate_clip, cooccurrence.clip_info),
}


def _make_clip(job: tuple[Path, str, int, int, str, str, Cues]) -> int:
    """Generate clip `index` and write its wav and avi (temp names, then rename)."""
    out_dir, task, seed, index, name, stem, cues = job
    audio, frames, _ = TASKS[task].generate(seed, index, name, cues)
    tmp = out_dir / TMP_DIR
    for ext, write in (
        (".wav", lambda p: sf.write(str(p), audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")),
        (".avi", lambda p: write_video(p, frames)),
    ):
        tmp_path = tmp / f"{name}-{stem}{ext}"
        write(tmp_path)
        os.replace(tmp_path, out_dir / name / f"{stem}{ext}")
    return index


def _splits(rng: np.random.Generator, count: int) -> list[str]:
    """A shuffled train/val/test assignment of `count` clips of one class."""
    n_val = int(round(SPLIT_FRACTIONS[1] * count))
    n_test = int(round(SPLIT_FRACTIONS[2] * count))
    names = ["val"] * n_val + ["test"] * n_test + ["train"] * (count - n_val - n_test)
    return [names[i] for i in rng.permutation(count)]


def _write_text(path: Path, text: str, tmp_dir: Path) -> None:
    """Writes path atomically through a temporary file in tmp_dir (TMP_DIR: what a stopped run
    leaves stays there, where the next run removes it)."""
    atomic.write_bytes(path, text.encode(), tmp_dir=tmp_dir)


def _task_field(task: str) -> dict:
    """corpus.json's "task" entry: none for "emotion", whose corpora predate tasks."""
    return {} if task == "emotion" else {"task": task}


def corpus_settings(clips: int, seed: int, classes: tuple[str, ...], cues: Cues,
                    task: str = "emotion") -> dict:
    """What defines a corpus (the same settings give the same bytes), as corpus.json has it."""
    settings = {"name": CORPUS_NAME, "generator": __name__, "version": GENERATOR_VERSION,
                **_task_field(task), "seed": seed, "classes": list(classes), "num_clips": clips,
                "cues": dataclasses.asdict(cues)}
    return json.loads(json.dumps(settings))  # tuples as lists, as read back from JSON


def _existing_corpus(out: Path, settings: dict) -> dict | None:
    """corpus.json of out if out holds this corpus finished; None if out is absent, empty or
    holds this corpus unfinished. Raises FileExistsError if out holds something else and
    ValueError if it holds a corpus with other settings."""
    if not out.exists() or not any(out.iterdir()):
        return None
    for path in (out / "corpus.json", out / TMP_DIR / SETTINGS_FILE):
        try:
            found = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(found, dict) or found.get("name") != CORPUS_NAME:
            continue
        have, want = ({"task": "emotion", **s} for s in (found, settings))  # see _task_field
        changed = [f"{k} {have.get(k)!r} -> {v!r}" for k, v in want.items() if have.get(k) != v]
        finished = path.name == "corpus.json"
        if changed:
            what, advice = (("a", "") if finished else
                            ("an unfinished", "finish it with its own settings, "))
            raise ValueError(f"{out} holds {what} synthetic corpus with other settings "
                             f"({'; '.join(changed)}); {advice}write to another folder or "
                             "delete this one")
        return found if finished else None
    raise FileExistsError(f"{out} is not empty and holds no avfbp synthetic corpus (no "
                          f"corpus.json or {TMP_DIR}/{SETTINGS_FILE}); choose a new or empty "
                          "folder")


def write_corpus(
    out_dir: str | os.PathLike,
    clips: int = DEFAULT_CLIPS,
    seed: int = 0,
    classes: tuple[str, ...] | None = None,
    cues: Cues | None = None,
    workers: int = 1,
    task: str = "emotion",
) -> dict:
    """Writes the corpus of `task` (one of TASKS) into out_dir; returns the corpus.json content.

    classes and cues default to the task's. Clip i has class classes[i % len(classes)] and stem
    f"clip{i:05d}". out_dir must be absent, empty, or hold this corpus: an unfinished one
    (stopped by Ctrl-C, a kill, a crash) is finished, keeping its whole clips, with the bytes an
    uninterrupted run writes; a finished one is left as it is. OUT_DIR/.synth-tmp/settings.json,
    written first, marks an unfinished corpus; corpus.json, written last, a finished one.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    spec = TASKS[task]
    classes = spec.classes if classes is None else classes
    cues = spec.cues if cues is None else cues
    unknown = [c for c in classes if c not in spec.names]
    if unknown or len(classes) < 2 or len(set(classes)) != len(classes):
        raise ValueError(f"classes of the {task} task must be 2+ distinct names from "
                         f"{sorted(spec.names)}: {classes}")
    names = [classes[i % len(classes)] for i in range(clips)]
    infos = [spec.info(seed, i, name, cues) for i, name in enumerate(names)]  # checks the cues
    out = Path(out_dir)
    settings = corpus_settings(clips, seed, classes, cues, task)
    tmp = out / TMP_DIR
    finished = _existing_corpus(out, settings)
    if finished is not None:
        shutil.rmtree(tmp, ignore_errors=True)  # left by a run stopped right after corpus.json
        return finished
    tmp.mkdir(parents=True, exist_ok=True)
    for path in tmp.iterdir():  # partial files of a stopped run
        if path.name != SETTINGS_FILE:
            path.unlink()
    _write_text(tmp / SETTINGS_FILE, json.dumps(settings, indent=1) + "\n", tmp)
    for name in classes:
        (out / name).mkdir(exist_ok=True)
    jobs = [(out, task, seed, i, name, f"clip{i:05d}", cues) for i, name in enumerate(names)
            if not all((out / name / f"clip{i:05d}{ext}").exists() for ext in (".wav", ".avi"))]
    try:
        with process_map(_make_clip, jobs, workers, ordered=False) as made:
            list(made)
    except interrupt.Interrupted as e:
        done = sum((out / name / f"clip{i:05d}.avi").exists() for i, name in enumerate(names))
        raise e.with_message(f"interrupted with {done} of {clips} clips of {out} written; run the "
                             "same command to resume") from None
    results = [(f"{names[i]}/clip{i:05d}", infos[i]) for i in range(clips)]

    split_rng = np.random.default_rng([seed, 2**32])
    split_of, counts = {}, {}
    for name in classes:
        ids = [clip for clip, _ in results if clip.startswith(name + "/")]
        for clip, split in zip(ids, _splits(split_rng, len(ids)), strict=True):
            split_of[clip] = split
        counts[name] = {s: sum(split_of[c] == s for c in ids) for s in ("train", "val", "test")}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["clip", "split"])
    writer.writerows([clip, split_of[clip]] for clip, _ in results)
    _write_text(out / "splits.csv", buffer.getvalue(), tmp)
    meta = {
        "name": CORPUS_NAME,
        "generator": __name__,
        "version": GENERATOR_VERSION,
        **_task_field(task),
        "seed": seed,
        "classes": list(classes),
        "num_clips": clips,
        "counts": counts,
        "sample_rate": SAMPLE_RATE,
        "fps": FPS,
        "frame_size": FRAME_SIZE,
        "cues": dataclasses.asdict(cues),
        "clip_info": dict(results),
    }
    _write_text(out / "corpus.json", json.dumps(meta, indent=1) + "\n", tmp)
    shutil.rmtree(tmp)
    return meta
