"""`avfbp faces MEDIA...`: per-frame facial-expression probabilities from the FER port.

Videos are sampled at --fps with the media reader; still images (png, jpg, ...) count as one
frame. In each frame the largest face is found exactly as `avfbp prepare` finds it
(FaceCropper.crop_frames). The crop is fer's own (`--crop fer`, the default: the box
made square and widened by 10 px, as fer's FER.detect_emotions cuts it) or the training
pipeline's (`--crop pipeline`: FaceCropper.crop, the crops `avfbp prepare` stores). Prints one
line per frame; --json writes everything to a file. A file that cannot be read is reported and
skipped; the exit status is then 1.
"""

import argparse
import os
import sys
from pathlib import Path

import cv2
import numpy as np

from avfbp_jax import atomic
from avfbp_jax.data.faces import FaceCropper, fer_crop
from avfbp_jax.data.media import MediaError, read_video
from avfbp_jax.models import fer

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})


def read_frames(path: str | os.PathLike, fps: float) -> tuple[np.ndarray, float]:
    """uint8 [T, H, W] grayscale frames and the frame rate they are at (0 for a still image)."""
    path = Path(path)
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        frames, _ = read_video(path, fps)
        return frames, fps
    image = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
    if image is None:
        raise MediaError(path, "missing or unreadable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)[None], 0.0  # fer: BGR image -> BGR2GRAY


def face_crops(frames: np.ndarray, cropper: FaceCropper,
               crop: str) -> tuple[np.ndarray, np.ndarray]:
    """Largest face per frame -> (uint8 [T, 64, 64] crops, zero where none; bool [T] found)."""
    return cropper.crop_frames(frames, fer_crop if crop == "fer" else None)


def classify_media(path: str | os.PathLike, params: dict, cropper: FaceCropper,
                   fps: float = 10.0, crop: str = "fer") -> dict:
    """One file's result: {"path", "fps", "frames": [{"time", "face", "probs" or None}]}."""
    frames, rate = read_frames(path, fps)
    crops, found = face_crops(frames, cropper, crop)
    probs = np.full((len(frames), len(fer.CLASS_NAMES)), np.nan, np.float32)
    probs[found] = fer.encode_crops(params, crops[found], output="probs")
    return {
        "path": str(path),
        "fps": rate,
        "frames": [{"time": t / rate if rate else 0.0, "face": bool(f),
                    "probs": [round(float(p), 6) for p in row] if f else None}
                   for t, (f, row) in enumerate(zip(found, probs, strict=True))],
    }


def format_result(result: dict) -> str:
    """A text table: one row per frame with the time, the 7 probabilities and the top class."""
    frames = result["frames"]
    faces = sum(f["face"] for f in frames)
    lines = [f"# {result['path']}: {len(frames)} frame(s), face in {faces}",
             "time_s  " + " ".join(f"{c:>8}" for c in fer.CLASS_NAMES) + "  top"]
    for f in frames:
        if f["face"]:
            cells = " ".join(f"{p:8.3f}" for p in f["probs"])
            top = fer.CLASS_NAMES[int(np.argmax(f["probs"]))]
        else:
            cells, top = " ".join(f"{'-':>8}" for _ in fer.CLASS_NAMES), "(no face)"
        lines.append(f"{f['time']:6.2f}  {cells}  {top}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("media", nargs="+", metavar="MEDIA", help="video or image files")
    parser.add_argument("--fps", type=float, default=10.0, help="frames per second of video")
    parser.add_argument("--crop", choices=("fer", "pipeline"), default="fer",
                        help="fer's face crop (default) or the prepare pipeline's")
    parser.add_argument("--weights", default=None,
                        help=f"converted FER weights (default: ${fer.WEIGHTS_ENV}, else "
                             f"{fer.default_weights_dir()})")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write results here")


def run(args: argparse.Namespace) -> int:
    try:
        params = fer.load_fer_params(args.weights)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cropper = FaceCropper()
    results, errors = [], []
    for path in args.media:
        try:
            result = classify_media(path, params, cropper, args.fps, args.crop)
        except (MediaError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            errors.append({"path": str(path), "error": str(e)})
            continue
        results.append(result)
        print(format_result(result), flush=True)
    if args.json:
        report = {"classes": list(fer.CLASS_NAMES), "files": results, "errors": errors}
        atomic.write_json(args.json, report)
    return 1 if errors else 0
