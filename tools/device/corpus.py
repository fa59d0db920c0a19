"""Device suite section "corpus": a synthetic corpus of clips as long as the step's input, and its
feature cache (tools.synthetic_cache), for the "host" and "e2e" sections."""

from __future__ import annotations

import os
import time

from avfbp_jax.data.faces import FaceCropper
from tools import synthetic_cache
from tools.device.part import Part
from tools.device.plan import Plan

CROP_SIZE = 64  # the paper-sized input


def run(plan: Plan, part: Part, *, work: str, commit: str) -> None:
    """The synthetic corpus (clips as long as the step's input) and its feature cache, prepared
    at the paper-sized inputs: 64x64 crops at 10 frames/s.

    Where OpenCV has no Haar cascade (opencv 5.x wheels dropped it; the GPU image's version is
    not known here, and a 4.x wheel is too large to carry beside PyAV), `prepare` cannot crop
    faces: the cache is then written by `write_whole_frame_cache` instead (same decoding, same
    cache format, the whole frame as the crop), so that "host" and "e2e" still run; the JSON
    says which path ran.
    """
    corpus, cache = os.path.join(work, "corpus"), os.path.join(work, "cache")
    start = time.time()
    synthetic_cache.write_corpus(corpus, plan.clips, workers=plan.workers,
                                 clip_seconds=plan.clip_seconds)
    synth_s = time.time() - start
    part.update(corpus=corpus, clips=plan.clips, clip_seconds=list(plan.clip_seconds),
                workers=plan.workers, synth_s=synth_s, synth_clips_per_s=plan.clips / synth_s)
    part.save()
    fps = plan.frames / plan.seconds
    try:
        FaceCropper(CROP_SIZE)
        part["cache_writer"] = "avfbp prepare"
    except Exception as e:  # noqa: BLE001 - any failure to load the detector
        part["cache_writer"] = f"whole frames (no face detector: {type(e).__name__}: {e})"
    start = time.time()
    if part["cache_writer"] == "avfbp prepare":
        synthetic_cache.prepare_cache(corpus, cache, workers=plan.workers, fps=fps,
                                      crop_size=CROP_SIZE)
    else:
        synthetic_cache.write_whole_frame_cache(corpus, cache, fps=fps, crop_size=CROP_SIZE,
                                                workers=plan.workers)
    prepare_s = time.time() - start
    part.update(cache=cache, fps=fps, crop_size=CROP_SIZE, prepare_s=prepare_s,
                prepare_clips_per_s=plan.clips / prepare_s)
