"""Per-class probabilities for media files from an exported bundle (`avfbp predict`).

MEDIA is any mix of video files, audio files, and folders (searched recursively). Files in one
folder with the same stem are one recording: an audio file next to a video file of the same stem
is its sound track (the folder corpus layout), whether it is named or not; a video without one
uses the audio track inside its container.

Each recording goes through the training pipeline (avfbp_jax.data.prepare.load_clip: decode,
resample to the bundle's sample rate, sample frames at its fps, crop faces with its detector;
for a model that reads per-frame FER features, the FER port encodes the crops, as `avfbp prepare
--fer-features` does) and then through the exported function of MODEL_DIR (an `avfbp export`
bundle), in batches. What is missing falls back to the modality that is there, because the
model masks invalid steps everywhere:
  * no face in any frame (or no video file): every frame is masked, the video stream pools
    nothing and contributes zero features; the prediction rests on the audio;
  * no usable audio (no track, silent, unreadable): audio_len is 0, the audio stream is masked
    out the same way; the prediction rests on the faces;
  * neither (or the missing one is the only modality the model uses): the file is skipped.
Each fallback is reported next to the file's result. A prediction that comes out non-finite is
reported as skipped rather than printed.

Batches are assembled as the training loader's are (avfbp_jax.data.batch): padded to the
bundle's length buckets (recordings longer than the last bucket to whole seconds, never cut), and
the batch dimension to --batch-size, so only a few shapes are compiled.
"""

import dataclasses
import math
import os
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from avfbp_jax.data.batch import assign_buckets, bucket_shapes, collate
from avfbp_jax.data.corpora import AUDIO_EXTENSIONS, VIDEO_EXTENSIONS
from avfbp_jax.data.faces import FaceCropper, shared_cropper
from avfbp_jax.data.media import MediaError, read_audio, read_video
from avfbp_jax.data.pool import process_map
from avfbp_jax.data.prepare import load_clip
from avfbp_jax.export import load_exported
from avfbp_jax.progress import Progress


@dataclasses.dataclass(frozen=True)
class Recording:
    """One input: a video and/or an audio file (None where absent)."""

    video: str | None
    audio: str | None

    @property
    def name(self) -> str:
        return self.video or self.audio


@dataclasses.dataclass
class Decoded:
    """A recording's arrays (audio None when unusable) and what was missing."""

    audio: np.ndarray | None
    frames: np.ndarray  # uint8 [T, S, S] face crops (zero where no face) or float32 [T, D]
    frame_mask: np.ndarray  # bool [T]: a face was found
    problems: list[str]


def find_recordings(paths: Sequence[str]) -> list[Recording]:
    """The recordings named by `paths` (files or folders), pairing same-stem audio and video."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                files += [os.path.join(root, n) for n in sorted(names)
                          if n.lower().endswith(AUDIO_EXTENSIONS + VIDEO_EXTENSIONS)]
        elif os.path.isfile(path):
            if not path.lower().endswith(AUDIO_EXTENSIONS + VIDEO_EXTENSIONS):
                raise ValueError(f"{path}: not a media file (extensions: "
                                 f"{' '.join(AUDIO_EXTENSIONS + VIDEO_EXTENSIONS)})")
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    files = list(dict.fromkeys(os.path.normpath(f) for f in files))  # each once, in order
    audio = {os.path.splitext(f)[0]: f for f in files if f.lower().endswith(AUDIO_EXTENSIONS)}
    videos = [f for f in files if f.lower().endswith(VIDEO_EXTENSIONS)]
    recordings = [Recording(v, audio.get(os.path.splitext(v)[0]) or _sibling_audio(v))
                  for v in videos]
    paired = {r.audio for r in recordings}
    return recordings + [Recording(None, a) for a in audio.values() if a not in paired]


def _sibling_audio(video: str) -> str | None:
    """The audio file next to `video` with the same stem, if there is one."""
    stem = os.path.splitext(video)[0]
    return next((stem + ext for ext in AUDIO_EXTENSIONS if os.path.isfile(stem + ext)), None)


def decode(recording: Recording, preprocessing: dict, cropper: FaceCropper) -> Decoded:
    """The recording through load_clip; on failure, each stream alone to keep what is usable."""
    rate, fps = preprocessing["sample_rate"], preprocessing["fps"]
    if recording.video is not None:
        try:
            clip = load_clip(recording.video, recording.audio, sample_rate=rate, fps=fps,
                             cropper=cropper, require_face=False)
        except MediaError:
            pass  # decode the streams one by one below to find out which one is unusable
        else:
            mask = clip["frame_mask"]
            problems = [] if mask.any() else [f"no face in any of {len(mask)} frames"]
            return Decoded(clip["audio"], clip["frames"], mask, problems)
    problems = []
    try:
        audio = read_audio(recording.audio or recording.video, rate)
    except MediaError as e:
        audio = None
        problems.append(f"no usable audio ({e})")
    side = cropper.crop_size
    crops, mask = np.zeros((0, side, side), np.uint8), np.zeros(0, bool)
    if recording.video is None:
        problems.append("no video file")
    else:
        try:
            frames, _ = read_video(recording.video, fps)
            crops, mask = cropper.crop_frames(frames)
            if not mask.any():
                problems.append(f"no face in any of {len(mask)} frames")
        except MediaError as e:
            problems.append(f"no usable video ({e})")
    return Decoded(audio, crops, mask, problems)


def _decode_job(job: tuple[Recording, dict, Callable | None]) -> Decoded:
    """decode() with this process's FaceCropper (for the worker pool); with frame_features (a
    bundle whose model reads per-frame FER features), the crops become those features."""
    recording, preprocessing, frame_features = job
    cropper = shared_cropper(preprocessing["crop_size"], preprocessing.get("face_detector", "haar"))
    decoded = decode(recording, preprocessing, cropper)
    if frame_features is not None:
        decoded.frames = frame_features(decoded.frames)
    return decoded


def fallback(decoded: Decoded, fusion: str) -> str | None:
    """None if the model can run on what was decoded, else why the recording is skipped."""
    uses_audio, uses_video = fusion != "video", fusion != "audio"
    has_audio, has_faces = decoded.audio is not None, bool(decoded.frame_mask.any())
    if (uses_audio and has_audio) or (uses_video and has_faces):
        return None
    return "; ".join(decoded.problems)


def make_batch(items: Sequence[Decoded], batch_size: int, preprocessing: dict,
               min_samples: int) -> dict[str, np.ndarray]:
    """A contract batch (data.batch.collate) of `items`: padded to the bucket that holds the
    longest (whole seconds past the last bucket: nothing is cut) and to batch_size rows (weight-0
    copies of row 0); a missing audio track is an empty one (audio_len 0)."""
    clips = [{"audio": d.audio if d.audio is not None else np.zeros(0, np.float32),
              "frames": d.frames, "frame_mask": d.frame_mask} for d in items]
    rate, fps = preprocessing["sample_rate"], preprocessing["fps"]
    buckets = preprocessing["buckets_s"]
    seconds = max(max(len(c["audio"]) / rate, len(c["frame_mask"]) / fps) for c in clips)
    b = assign_buckets([seconds], buckets)[0]
    samples, frames = bucket_shapes([buckets[b] if b < len(buckets) else math.ceil(seconds)],
                                    rate, fps)[0]
    samples = max(samples, min_samples, *(len(c["audio"]) for c in clips))
    frames = max(frames, 1, *(len(c["frame_mask"]) for c in clips))
    weights = (np.arange(batch_size) < len(clips)).astype(np.float32)
    return collate(clips + [clips[0]] * (batch_size - len(clips)), samples, frames,
                   weights=weights)


def predict(model_dir: str, paths: Sequence[str], *, batch_size: int = 8, workers: int = 1,
            progress: bool = True) -> Iterator[dict]:
    """Yields one result per recording, in input order (with workers > 1, that many processes
    decode ahead while the model runs):
    {"file", "video", "audio", "probabilities": {label: p}, "prediction", "notes"} or
    {"file", "video", "audio", "skipped": reason}.
    """
    infer, meta = load_exported(model_dir)
    pre = meta["preprocessing"]
    frame_features = None
    if pre["frame_input"] == "features":  # the FER port's features of the crops, as prepare
        from avfbp_jax.models import fer

        frame_features = fer.FrameFeatures(pre["crop_size"])
    recordings = find_recordings(paths)
    if not recordings:
        raise ValueError(f"no media files in {' '.join(paths)}")
    labels, fusion = meta["labels"], meta["model_config"]["fusion"]
    bar = Progress(len(recordings), label="predict", unit="files") if progress else None
    # (recording, decoded, skip reason or None), in input order, until a batch is full.
    pending: list[tuple[Recording, Decoded, str | None]] = []

    def flush() -> Iterator[dict]:
        runnable = [d for _, d, reason in pending if reason is None]
        probs = []
        if runnable:
            batch = make_batch(runnable, batch_size, pre, meta["min_audio_samples"])
            probs = list(np.asarray(infer(batch)["probs"])[:len(runnable)])
        for recording, decoded, reason in pending:
            result = {"file": recording.name, "video": recording.video, "audio": recording.audio}
            if reason is None:
                p = probs.pop(0)
                if np.all(np.isfinite(p)):
                    yield result | {"probabilities": dict(zip(labels, map(float, p), strict=True)),
                                    "prediction": labels[int(np.argmax(p))],
                                    "notes": decoded.problems}
                    continue
                reason = "the model gave non-finite probabilities"
            yield result | {"skipped": reason}
        if bar:
            bar.update(len(pending))
        pending.clear()

    jobs = [(recording, pre, frame_features) for recording in recordings]
    try:
        with process_map(_decode_job, jobs, workers) as decoded_all:
            for recording, decoded in zip(recordings, decoded_all, strict=True):
                pending.append((recording, decoded, fallback(decoded, fusion)))
                if sum(reason is None for _, _, reason in pending) == batch_size:
                    yield from flush()
            if pending:
                yield from flush()
    finally:
        if bar:
            bar.close()


def format_result(result: dict) -> str:
    """One line: file, top class, every class's probability, and notes or the skip reason."""
    if "skipped" in result:
        return f"{result['file']}: skipped: {result['skipped']}"
    probs = "  ".join(f"{k} {v:.3f}" for k, v in result["probabilities"].items())
    notes = f"  [{'; '.join(result['notes'])}]" if result["notes"] else ""
    return f"{result['file']}: {result['prediction']}  ({probs}){notes}"
