"""Per-frame face detection and square grayscale face crops (the pipeline's, and fer's).

Two detectors, chosen by `data.face_detector` through `make_detector(name)`; each answers
`detect(gray_frame, near=None)` with a box (x, y, w, h) in the frame's pixels, or None:
- "haar": OpenCV's Viola-Jones cascade `haarcascade_frontalface_default.xml`, which ships inside
  the opencv-python(-headless) 4.x wheel (`cv2.data.haarcascades`): offline, nothing to convert.
  The opencv-python 5.0 wheels no longer ship CascadeClassifier or the cascade files (and
  OpenCV's DNN detector YuNet needs an ONNX file no wheel ships); hence setup.cfg pins
  opencv-python-headless>=4.9,<5. It finds frontal faces only.
- "mtcnn": the JAX port of MTCNN (data/mtcnn.py; weights converted once by
  `python3 -m avfbp_jax.commands.mtcnn_convert`), which also finds profile, small and cut-off faces.
Both run on the frame shrunk so its longer side is at most detect_size pixels (their cost grows
with the area). Frames without a face are reported (found=False, zero crop) so the model masks
them instead of dropping them, which would shift the frames against the audio.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Protocol

import cv2
import numpy as np

from avfbp_jax.data.config import FACE_DETECTORS

CASCADE_FILE = "haarcascade_frontalface_default.xml"

Box = tuple[int, int, int, int]

# fer's face cropping (fer/fer.py: PADDING, FER(offsets=(10, 10)), cv2.resize defaults) and the
# input side of its expression network (avfbp_jax.models.fer.INPUT_SIZE).
FER_CROP_SIZE = 64
FER_PADDING = 40
FER_OFFSETS = (10, 10)


def fer_crop(gray: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """fer's crop of one face: uint8 [H, W] grayscale frame, (x, y, w, h) box -> uint8 [64, 64].

    Same steps as `FER.detect_emotions`: pad the frame by 40 pixels with the mean of its bottom
    two rows, make the box square by growing its shorter side, widen it by 10 pixels on every
    side, clip its top-left corner at the padded frame's origin, and resize with cv2.resize's
    default (bilinear) interpolation. Pass it to FaceCropper.crop_frames to cut fer's crops.
    """
    gray = np.asarray(gray)
    if gray.dtype != np.uint8 or gray.ndim != 2:
        raise ValueError(f"fer_crop wants a uint8 [H, W] frame, got {gray.dtype} {gray.shape}")
    mean = cv2.mean(gray[-2:])[0]
    padded = cv2.copyMakeBorder(
        gray, *(FER_PADDING,) * 4, borderType=cv2.BORDER_CONSTANT, value=[mean] * 3
    )
    x, y, w, h = (int(v) for v in box)
    if h > w:
        x, w = x - (h - w) // 2, h
    elif w > h:
        y, h = y - (w - h) // 2, w
    x_off, y_off = FER_OFFSETS
    x1, x2 = max(0, x - x_off + FER_PADDING), x + w + x_off + FER_PADDING
    y1, y2 = max(0, y - y_off + FER_PADDING), y + h + y_off + FER_PADDING
    face = padded[y1:y2, x1:x2]
    if face.size == 0:
        raise ValueError(f"face box {tuple(box)} lies outside the {gray.shape} frame")
    return cv2.resize(face, (FER_CROP_SIZE, FER_CROP_SIZE))


class Detector(Protocol):
    def detect(self, frame: np.ndarray, near: Box | None = None) -> Box | None: ...


class HaarDetector:
    """The largest face OpenCV's frontal-face Haar cascade finds in a grayscale frame."""

    def __init__(self, *, scale_factor: float = 1.1, min_neighbors: int = 5,
                 min_face_fraction: float = 0.1):
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_face_fraction = min_face_fraction
        path = cv2.data.haarcascades + CASCADE_FILE
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise RuntimeError(f"cannot load the OpenCV Haar cascade {path}")

    def detect(self, frame: np.ndarray, near: Box | None = None) -> Box | None:
        """Largest face box (x, y, w, h), or None.

        With `near` (the previous frame's box) the cascade first searches only around it, at
        sizes within 25% of it, which costs a fraction of a full search; if that finds nothing
        the whole frame is searched.
        """
        if near is not None:
            x, y, bw, bh = near
            x0, y0 = max(0, int(x - 0.5 * bw)), max(0, int(y - 0.5 * bh))
            x1 = min(frame.shape[1], int(x + 1.5 * bw))
            y1 = min(frame.shape[0], int(y + 1.5 * bh))
            box = self._largest(frame[y0:y1, x0:x1], 0.75 * bw, 1.25 * bw)
            if box is not None:
                return (box[0] + x0, box[1] + y0, *box[2:])
        return self._largest(frame, self.min_face_fraction * min(frame.shape), None)

    def _largest(self, image: np.ndarray, min_side: float, max_side: float | None):
        min_side = max(24, int(min_side))
        if min(image.shape) < min_side:
            return None
        max_size = (int(max_side), int(max_side)) if max_side else (0, 0)  # (0, 0): no limit
        boxes = self._cascade.detectMultiScale(
            image,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(min_side, min_side),
            maxSize=max_size,
        )
        if len(boxes) == 0:
            return None
        return tuple(max(boxes, key=lambda b: b[2] * b[3]))


class DownscaledDetector:
    """Runs `detector` on a copy of the frame shrunk so its longer side is at most detect_size
    pixels (INTER_AREA) and maps its box back to full-frame pixels."""

    def __init__(self, detector: Detector, detect_size: int = 240):
        self.detector = detector
        self.detect_size = detect_size

    def detect(self, frame: np.ndarray, near: Box | None = None) -> Box | None:
        h, w = frame.shape
        scale = min(1.0, self.detect_size / max(h, w))
        small = frame
        if scale < 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        near = None if near is None else tuple(v * scale for v in near)
        box = self.detector.detect(small, near=near)
        return None if box is None else tuple(int(round(v / scale)) for v in box)


def make_detector(name: str = "haar", *, detect_size: int = 240, **options) -> DownscaledDetector:
    """The face detector `name` (one of FACE_DETECTORS) on frames shrunk to detect_size pixels;
    options go to its class (HaarDetector, or data.mtcnn.MtcnnDetector)."""
    if name == "haar":
        detector = HaarDetector(**options)
    elif name == "mtcnn":
        from avfbp_jax.data.mtcnn import MtcnnDetector

        detector = MtcnnDetector(**options)
    else:
        raise ValueError(f"face detector must be one of {', '.join(FACE_DETECTORS)}, got {name!r}")
    return DownscaledDetector(detector, detect_size)


class FaceCropper:
    """Finds a face in each frame and returns a square crop around it.

    The crop is cut from the full-resolution frame: a square of side (1 + 2 * margin) *
    max(box w, h) centred on the box, zero-padded where it leaves the frame, resized to
    crop_size. Every frame gets its own detection; in a sequence the search starts around the
    previous frame's face (where the detector can use that).
    """

    def __init__(self, crop_size: int = 64, *, margin: float = 0.15,
                 detector: Detector | None = None):
        self.crop_size = crop_size
        self.margin = margin
        self.detector = detector if detector is not None else make_detector("haar")

    def detect(self, frame: np.ndarray, near: Box | None = None) -> Box | None:
        """The detector's face box in full-frame pixels, or None."""
        return self.detector.detect(frame, near=near)

    def crop(self, frame: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """Square crop_size x crop_size crop around box, zero outside the frame."""
        x, y, bw, bh = box
        side = max(1, int(round(max(bw, bh) * (1.0 + 2.0 * self.margin))))
        x0 = int(round(x + bw / 2.0 - side / 2.0))
        y0 = int(round(y + bh / 2.0 - side / 2.0))
        h, w = frame.shape
        patch = np.zeros((side, side), np.uint8)
        sx0, sy0 = max(x0, 0), max(y0, 0)
        sx1, sy1 = min(x0 + side, w), min(y0 + side, h)
        if sx1 > sx0 and sy1 > sy0:
            patch[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = frame[sy0:sy1, sx0:sx1]
        interp = cv2.INTER_AREA if side > self.crop_size else cv2.INTER_LINEAR
        return cv2.resize(patch, (self.crop_size, self.crop_size), interpolation=interp)

    def crop_frames(
        self, frames: np.ndarray, crop: Callable[[np.ndarray, tuple], np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Face crops of uint8 [T, H, W] grayscale frames: (uint8 [T, S, S], found bool [T]).

        crop(frame, box) cuts each face (default self.crop; `fer_crop` cuts fer's own crop).
        """
        crop = crop or self.crop
        frames = np.asarray(frames)
        if frames.ndim != 3 or frames.dtype != np.uint8:
            raise ValueError(f"expected uint8 [T, H, W] frames, got {frames.dtype} {frames.shape}")
        s = self.crop_size
        crops = np.zeros((len(frames), s, s), np.uint8)
        found = np.zeros(len(frames), bool)
        box = None
        for t, frame in enumerate(frames):
            box = self.detect(frame, near=box)
            if box is not None:
                crops[t] = crop(frame, box)
                found[t] = True
        return crops, found


@functools.cache
def shared_cropper(crop_size: int, face_detector: str = "haar") -> FaceCropper:
    """One FaceCropper per crop size and detector in this process (workers reuse theirs)."""
    return FaceCropper(crop_size, detector=make_detector(face_detector))
