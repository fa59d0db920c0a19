"""A synthetic corpus and its feature cache for the benchmarks (bench_train --build-cache, the
device suite's corpus section), through the package's synth and prepare library functions.

`write_whole_frame_cache` is prepare without the face detector (each whole frame resized as the
crop): the device suite's fallback where OpenCV has no Haar cascade.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os

from avfbp_jax.data import cache, prepare, synthetic
from avfbp_jax.data.config import data_config
from avfbp_jax.data.corpora import read_corpus

WHOLE_FRAMES = "none: whole frames"


def write_corpus(corpus_dir: str, clips: int, *, workers: int,
                 clip_seconds: tuple[float, float] | None = None) -> None:
    """`avfbp synth CORPUS_DIR --clips CLIPS` (seed 0), clips lasting `clip_seconds` (min, max)
    when given."""
    cues = synthetic.Cues()
    if clip_seconds is not None:
        cues = dataclasses.replace(cues, min_seconds=clip_seconds[0], max_seconds=clip_seconds[1])
    synthetic.write_corpus(corpus_dir, clips=clips, seed=0, cues=cues, workers=workers)


def _settings(corpus_dir: str, fps: float, crop_size: int, face_detector: str) -> dict:
    """The cache settings for a folder corpus with data_config()'s options (as prepare records)."""
    d = data_config()
    return {"corpus_dir": os.path.abspath(corpus_dir), **{k: d[k] for k in prepare.PREPROCESSING},
            "fps": fps, "crop_size": crop_size, "face_detector": face_detector,
            "fer_features": False}


def prepare_cache(corpus_dir: str, cache_dir: str, *, workers: int, fps: float | None = None,
                  crop_size: int | None = None) -> None:
    """`avfbp prepare CORPUS_DIR CACHE_DIR` (fps and crop size default to data_config()'s)."""
    settings = data_config()
    settings.fps = fps or settings.fps
    settings.crop_size = crop_size or settings.crop_size
    if not prepare.prepare_cache(corpus_dir, cache_dir, settings, workers=workers)["records"]:
        raise RuntimeError(f"prepare: no usable clip in {corpus_dir}")


def build(workdir: str, clips: int, *, workers: int) -> str:
    """WORKDIR/corpus of `clips` synthetic clips and its cache WORKDIR/cache; returns the cache."""
    corpus_dir, cache_dir = os.path.join(workdir, "corpus"), os.path.join(workdir, "cache")
    write_corpus(corpus_dir, clips, workers=workers)
    prepare_cache(corpus_dir, cache_dir, workers=workers)
    return cache_dir


def write_whole_frame_cache(corpus_dir: str, cache_dir: str, *, fps: float, crop_size: int,
                            workers: int) -> None:
    """A feature cache of a folder corpus without face detection: each frame, whole, resized to
    crop_size (the synthetic corpus's face fills most of the frame), every frame marked found."""
    d = data_config()
    corpus = read_corpus("folder", corpus_dir, excited_as_happy=d.excited_as_happy,
                         marker_actor_side=d.marker_actor_side, seed=d.split_seed)
    os.makedirs(os.path.join(cache_dir, cache.CLIPS), exist_ok=True)
    jobs = [(clip, cache_dir, fps, crop_size) for clip in corpus.clips]
    with multiprocessing.get_context("spawn").Pool(max(1, min(workers, len(jobs)))) as pool:
        records = pool.map(_whole_frame_clip, jobs, chunksize=8)
    settings = _settings(corpus_dir, fps, crop_size, WHOLE_FRAMES)
    cache.write_index(cache_dir, corpus.classes, settings, records, [], corpus.dropped)


def _whole_frame_clip(job: tuple) -> dict:
    import cv2
    import numpy as np

    from avfbp_jax.data import media

    clip, cache_dir, fps, size = job
    audio = media.read_audio(clip.audio, data_config().sample_rate)
    frames, _ = media.read_video(clip.video, fps)
    crops = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])
    name = cache.write_clip(cache_dir, clip.id, audio, crops, np.ones(len(crops), bool))
    return {**clip.record(), "file": name, "audio_len": len(audio), "num_frames": len(crops),
            "num_faces": len(crops)}
