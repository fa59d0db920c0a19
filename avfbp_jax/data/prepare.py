"""Decoding a corpus into a feature cache (see cache.py): `prepare_cache`, behind `avfbp prepare`
and the training run's automatic preparation.

Each clip goes through load_clip (the one per-clip pipeline, also used by predict): audio
decoded and resampled to 16 kHz, frames sampled at fps (cut to the clip's [start, end] segment
when it has one), the face in each frame found and cropped. Per-frame features of the crops
(the FER port's, avfbp_jax.models.fer.FrameFeatures) come in as a callable, so this layer
imports no model code. Clips that cannot be used go to the manifest ("skipped" in index.json)
with the reason and the run carries on. Clip files already in the cache are reused, so an
interrupted run (Ctrl-C, SIGTERM, a kill) resumes where it stopped; index.json is written last,
so a cache with an index is a finished run.
"""

import json
import os
import shutil
import time
from collections.abc import Callable, Mapping

import numpy as np

from avfbp_jax import atomic, interrupt
from avfbp_jax.data import cache
from avfbp_jax.data.corpora import Clip, read_corpus
from avfbp_jax.data.faces import FaceCropper, shared_cropper
from avfbp_jax.data.media import MediaError, read_audio, read_video
from avfbp_jax.data.pool import process_map
from avfbp_jax.data.speaking_side import speaking_side
from avfbp_jax.progress import Progress

SETTINGS = "settings.json"  # written first; index.json, written last, marks a finished run
# The data config fields (avfbp_jax.data.config) that say how a corpus is read and decoded.
PREPROCESSING = ("corpus", "sample_rate", "fps", "crop_size", "excited_as_happy",
                 "marker_actor_side", "split_seed", "face_detector")
# Settings that change a cache's content: a rerun with other values needs a new cache dir.
CONTENT_SETTINGS = (*PREPROCESSING, "fer_features")

FrameFeatureFn = Callable[[np.ndarray], np.ndarray]  # uint8 crops [T, S, S] -> float32 [T, D]


def load_clip(video: str, audio: str | None = None, *, start: float | None = None,
              end: float | None = None, region: str | None = None, sample_rate: int = 16000,
              fps: float = 10.0, cropper: FaceCropper | None = None,
              require_face: bool = True) -> dict[str, np.ndarray]:
    """One clip: audio float32 [S] at sample_rate, frames uint8 [T, C, C] face crops (zero where
    no face), frame_mask bool [T] (a face was found), the keys of FeatureCache.get.

    audio None takes the video's own audio track (cut to [start, end] like the frames); region
    "left"/"right" searches faces in that half of each frame only, "speaking" in the half whose
    face's mouth moves with the speech (speaking_side; the whole frame if that is undecided).
    Raises MediaError naming the file for unusable media, and when require_face and no frame has
    a face.
    """
    cropper = cropper or FaceCropper()
    frames, _ = read_video(video, fps, start=start or 0.0, end=end)
    if audio is None:
        wave = read_audio(video, sample_rate)
        first = round((start or 0.0) * sample_rate)
        wave = wave[first:None if end is None else round(end * sample_rate)]
        if not len(wave):
            raise MediaError(video, f"no audio in the segment [{start}, {end}] s")
    else:
        wave = read_audio(audio, sample_rate)
    if region == "speaking":
        region = speaking_side(frames, wave, sample_rate, fps, cropper.detector)
    if region is not None:
        half = frames.shape[2] // 2
        frames = frames[:, :, :half] if region == "left" else frames[:, :, half:]
    crops, found = cropper.crop_frames(np.ascontiguousarray(frames))
    if require_face and not found.any():
        where = f" of [{start}, {end}] s" if start is not None or end is not None else ""
        raise MediaError(video, f"no face found in any of {len(found)} frames{where}")
    return {"audio": wave, "frames": crops, "frame_mask": found}


def _prepare_one(job: tuple[int, Clip, str, dict, FrameFeatureFn | None]
                 ) -> tuple[int, dict | None, str]:
    """Worker: load and write one clip; returns (position, record or None, skip reason)."""
    position, clip, cache_dir, settings, frame_features = job
    if clip.video is None:
        return position, None, f"{clip.audio}: no video file with this stem (audio only)"
    try:
        arrays = load_clip(clip.video, clip.audio, start=clip.start, end=clip.end,
                           region=clip.region, sample_rate=settings["sample_rate"],
                           fps=settings["fps"],
                           cropper=shared_cropper(settings["crop_size"], settings["face_detector"]))
        features = frame_features(arrays["frames"]) if frame_features is not None else None
        name = cache.write_clip(cache_dir, clip.id, arrays["audio"], arrays["frames"],
                                arrays["frame_mask"], features)
    except MediaError as e:
        return position, None, str(e)
    except Exception as e:  # a run never dies on one bad file: record it and carry on
        return position, None, f"{clip.video}: {type(e).__name__}: {e}"
    found = arrays["frame_mask"]
    return position, {**clip.record(), "file": name, "audio_len": len(arrays["audio"]),
                      "num_frames": len(found), "num_faces": int(found.sum())}, ""


def _check_settings(cache_dir: str, settings: dict) -> None:
    """Records the run's settings in CACHE_DIR/settings.json, refusing to mix in other ones."""
    path = os.path.join(cache_dir, SETTINGS)
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        changed = [f"{k}={old.get(k)!r}" for k in CONTENT_SETTINGS if old.get(k) != settings[k]]
        if changed:
            raise ValueError(f"{cache_dir} was prepared with other settings "
                             f"({', '.join(changed)}); use a new cache directory")
    atomic.write_json(path, settings)


def _clean_temporaries(cache_dir: str) -> None:
    """Removes temporary files and folders an interrupted run left behind (never whole files)."""
    for folder in (cache_dir, os.path.join(cache_dir, cache.CLIPS)):
        for name in os.listdir(folder) if os.path.isdir(folder) else ():
            path = os.path.join(folder, name)
            if name.startswith(atomic.TMP_PREFIX) and os.path.isdir(path):
                shutil.rmtree(path)
            elif name.startswith(atomic.TMP_PREFIX):
                os.remove(path)


def prepare_cache(corpus_dir: str, cache_dir: str, settings: Mapping,
                  frame_features: FrameFeatureFn | None = None, workers: int = 1) -> dict:
    """Writes (or finishes) the feature cache of the corpus in corpus_dir.

    settings: the PREPROCESSING fields of a data config (a ConfigDict or a dict);
    frame_features: stores its output for each clip's crops beside them (the cache's "fer"
    array, FeatureCache(frame_input="fer")). Returns {"records", "skipped", "reused", "new",
    "processed", "seconds"}; a cache where every clip was skipped is still written (its index
    lists why). Raises ValueError for an unreadable or empty corpus and for a cache prepared
    with other settings.
    """
    settings = {"corpus_dir": os.path.abspath(corpus_dir),
                **{k: settings[k] for k in PREPROCESSING},
                "fer_features": frame_features is not None}
    corpus = read_corpus(settings["corpus"], corpus_dir,
                         excited_as_happy=settings["excited_as_happy"],
                         marker_actor_side=settings["marker_actor_side"],
                         seed=settings["split_seed"])
    if not corpus.clips:
        raise ValueError(f"{corpus_dir}: no clips found in a {settings['corpus']} layout")
    os.makedirs(os.path.join(cache_dir, cache.CLIPS), exist_ok=True)
    _check_settings(cache_dir, settings)
    _clean_temporaries(cache_dir)
    done: dict[int, dict] = {}
    pending = []
    for position, clip in enumerate(corpus.clips):
        summary = cache.clip_summary(cache_dir, cache.clip_file(clip.id))
        if summary is not None:
            done[position] = {**clip.record(), "file": cache.clip_file(clip.id), **summary}
        else:
            pending.append((position, clip, cache_dir, settings, frame_features))

    reused, skipped = len(done), {}
    start = time.perf_counter()
    try:
        with (Progress(len(pending), label="prepare", unit="clips") as progress,
              process_map(_prepare_one, pending, workers, ordered=False) as results):
            for position, record, reason in results:
                if record is None:
                    skipped[position] = reason
                else:
                    done[position] = record
                progress.update()
    except interrupt.Interrupted as e:
        raise e.with_message(f"interrupted with {len(done)} of {len(corpus.clips)} clips in "
                             f"{cache_dir}; run the same command to resume") from None
    seconds = time.perf_counter() - start
    manifest = [{"id": corpus.clips[p].id, "reason": skipped[p]} for p in sorted(skipped)]
    records = [done[p] for p in sorted(done)]
    cache.write_index(cache_dir, corpus.classes, settings, records, manifest, corpus.dropped)
    return {"records": records, "skipped": manifest, "reused": reused,
            "new": len(pending) - len(skipped), "processed": len(pending), "seconds": seconds}


def summary(result: dict, cache_dir: str) -> str:
    """One line about a prepare_cache result: clips written, reused, skipped, and the rate."""
    rate = result["processed"] / max(result["seconds"], 1e-9)
    index = os.path.join(cache_dir, cache.INDEX)
    return (f"{len(result['records'])} clips in {cache_dir} ({result['new']} new, "
            f"{result['reused']} reused), {len(result['skipped'])} skipped (listed in {index}); "
            f"{rate:.2f} clips/s over {result['processed']} clips in {result['seconds']:.1f} s")


def failure(result: dict, corpus_dir: str) -> str | None:
    """None if the prepared cache has a usable clip, else why not (one line)."""
    if result["records"]:
        return None
    skipped = result["skipped"]
    if not skipped:
        return f"no usable clip in {corpus_dir}"
    return (f"no usable clip in {corpus_dir}: all {len(skipped)} skipped, e.g. "
            f"{skipped[0]['reason']}")
