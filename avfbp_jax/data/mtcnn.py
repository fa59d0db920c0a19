"""MTCNN face detection: the original three-stage pipeline around the Flax nets of mtcnn_nets.

A port of the `mtcnn` 0.1.1 package's pipeline (Ivan de Paz Centeno, MIT; after facenet's
detect_face.py by David Sandberg, itself after the MTCNN authors' MATLAB code), step by step:

1. Image pyramid: scales 12/min_face_size * scale_factor^k while the shorter side stays >= 12 px,
   each level resized with cv2 INTER_AREA. P-Net runs on every level; each output cell whose face
   probability is >= thresholds[0] is a 12x12 window (stride 2) mapped back to the image. NMS at
   IoU 0.5 per level, then 0.7 over all levels; box regression (offsets times width and height
   without the +1), squared, truncated to integers.
2. Each candidate is cut from the image (zero outside it), resized to 24x24 (INTER_AREA) and
   scored by R-Net: probability > thresholds[1], NMS at IoU 0.7, regression (times width + 1),
   squared.
3. The same at 48x48 through O-Net: probability > thresholds[2], five landmarks, regression,
   NMS at 0.7 over the smaller box's area ("Min").

Box corners follow the MATLAB convention the nets were trained with: a box from x1 to x2 covers
image columns x1 - 1 .. x2 - 1. The returned (x, y, w, h) is the original's: x = max(0, int(x1)),
w = int(x2 - x), likewise for y and h (clipped at the top and left edges only).

Kept on purpose: where exactly one P-Net cell of a pyramid level passes the threshold, the
original reads that cell's box offsets from the horizontally mirrored column (its `np.flipud` on
the transposed map, a slip in translating MATLAB's vector transposes). The port does the same,
so that it reproduces the original's detections exactly; reading the cell's own offsets instead
changed the detections on 4 of 409 test images (tools/face_detectors.py's LFW and astronaut
frames).

The nets run jitted: P-Net once per pyramid level (a video's frames share the levels' shapes, so
each level compiles once), R- and O-Net on crops zero-padded to 8, 16, ..., 128 rows.
"""

from typing import NamedTuple

import cv2
import jax
import numpy as np

from avfbp_jax.data import mtcnn_nets
from avfbp_jax.data.mtcnn_nets import CROP_SIZES, MODULES, normalize

PNET_STRIDE, PNET_CELL = 2, 12
BATCH_SIZES = (8, 16, 32, 64, 128)
THRESHOLDS = (0.6, 0.7, 0.7)

_APPLY = {name: jax.jit(module.apply) for name, module in MODULES.items()}


class Face(NamedTuple):
    """One detection: box (x, y, w, h) in pixels, face probability, landmarks float [5, 2] (x, y)
    of the left eye, right eye, nose, left and right mouth corner (left/right as seen)."""

    box: tuple[int, int, int, int]
    confidence: float
    landmarks: np.ndarray


def pyramid_scales(height: int, width: int, min_face_size: float = 20,
                   scale_factor: float = 0.709) -> list[float]:
    """The pyramid's scales: 12 / min_face_size * scale_factor^k while min side * scale >= 12."""
    first = 12.0 / min_face_size
    scales, side = [], min(height, width) * first
    while side >= 12:
        scales.append(first * scale_factor ** len(scales))
        side *= scale_factor
    return scales


def nms(boxes: np.ndarray, threshold: float, method: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression of [N, >=5] rows (x1, y1, x2, y2, score, ...).

    Returns the kept rows' indices, highest score first. Overlap is the intersection over the
    union ("union") or over the smaller box ("min"); areas count inclusive pixels (+1), and a
    box is dropped when its overlap with a kept one exceeds threshold.
    """
    x1, y1, x2, y2, score = boxes[:, :5].T
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(score)
    keep = []
    while order.size > 0:
        i, rest = order[-1], order[:-1]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        if method == "min":
            overlap = inter / np.minimum(area[i], area[rest])
        else:
            overlap = inter / (area[i] + area[rest] - inter)
        order = rest[overlap <= threshold]
    return np.asarray(keep, np.int64)


def square(boxes: np.ndarray) -> np.ndarray:
    """Boxes grown to squares of side max(x2 - x1, y2 - y1) around the same centre."""
    boxes = boxes.copy()
    wh = boxes[:, 2:4] - boxes[:, 0:2]
    side = wh.max(axis=1, keepdims=True)
    boxes[:, 0:2] += 0.5 * wh - 0.5 * side
    boxes[:, 2:4] = boxes[:, 0:2] + side
    return boxes


def regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Box regression of R- and O-Net: corners moved by offsets [N, 4] times (w + 1, h + 1)."""
    boxes = boxes.copy()
    wh = boxes[:, 2:4] - boxes[:, 0:2] + 1
    boxes[:, 0:4] += offsets * np.tile(wh, 2)
    return boxes


def crop_resize(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """uint8 [H, W, C] image, integer-valued boxes [N, >=4] -> float32 [N, size, size, C].

    Each box covers columns x1 - 1 .. x2 - 1 and rows y1 - 1 .. y2 - 1, zero outside the image,
    and is resized to size x size with INTER_AREA, as the original's crops.
    """
    h, w, c = image.shape
    out = np.zeros((len(boxes), size, size, c), np.float32)
    for k, (x1, y1, x2, y2) in enumerate(boxes[:, :4].astype(np.int64) - [1, 1, 0, 0]):
        if x2 <= x1 or y2 <= y1:
            continue  # an empty box stays a zero crop
        patch = np.zeros((y2 - y1, x2 - x1, c), np.float32)
        sx0, sy0, sx1, sy1 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if sx1 > sx0 and sy1 > sy0:
            patch[sy0 - y1:sy1 - y1, sx0 - x1:sx1 - x1] = image[sy0:sy1, sx0:sx1]
        out[k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA).reshape(
            size, size, c)
    return out


def proposals(probs: np.ndarray, offsets: np.ndarray, scale: float,
              threshold: float) -> np.ndarray:
    """P-Net cells with face probability [H', W'] >= threshold -> [K, 9] rows: x1, y1, x2, y2
    (the cell's 12x12 window in image pixels), score, then the cell's 4 box offsets (see the
    module docstring for a lone cell)."""
    cols, rows = np.where(probs.T >= threshold)  # the original's order: by x, then y
    if len(cols) == 1:  # as the original: a lone cell's offsets from the mirrored column
        offsets = offsets[:, ::-1]
    cells = np.stack([cols, rows], axis=1).astype(np.float64)
    return np.hstack([np.fix((PNET_STRIDE * cells + 1) / scale),
                      np.fix((PNET_STRIDE * cells + PNET_CELL) / scale),
                      probs[rows, cols][:, None], offsets[rows, cols]])


def apply_net(name: str, params: dict, x: np.ndarray) -> dict[str, np.ndarray]:
    """One net ("pnet", "rnet", "onet"; jitted, compiled once per input shape) -> numpy outputs."""
    return {k: np.asarray(v) for k, v in _APPLY[name]({"params": params}, x).items()}


def run_net(name: str, params: dict, x: np.ndarray) -> dict[str, np.ndarray]:
    """R- or O-Net on float32 [N >= 1, S, S, 3], in zero-padded batches of BATCH_SIZES rows."""
    outs = []
    for start in range(0, len(x), BATCH_SIZES[-1]):
        chunk = x[start:start + BATCH_SIZES[-1]]
        padded = np.zeros((next(b for b in BATCH_SIZES if b >= len(chunk)),) + x.shape[1:],
                          np.float32)
        padded[:len(chunk)] = chunk
        out = apply_net(name, params, padded)
        outs.append({k: v[:len(chunk)] for k, v in out.items()})
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


class MtcnnDetector:
    """MTCNN with the original's defaults: minimum face 20 px, pyramid factor 0.709, stage
    thresholds (0.6, 0.7, 0.7). params: the converted weights (default: `load_params()`)."""

    def __init__(self, params: dict | None = None, *, min_face_size: float = 20,
                 scale_factor: float = 0.709, thresholds: tuple[float, float, float] = THRESHOLDS):
        self.params = params if params is not None else mtcnn_nets.load_params()
        self.min_face_size = min_face_size
        self.scale_factor = scale_factor
        self.thresholds = thresholds

    def detect(self, gray_frame: np.ndarray,
               near: tuple[float, ...] | None = None) -> tuple[int, int, int, int] | None:
        """The most confident face's box (x, y, w, h) in a uint8 [H, W] frame, or None.

        `near` (the previous frame's box, the faces.Detector interface) is not used: the image
        pyramid costs the same wherever the face is.
        """
        gray_frame = np.asarray(gray_frame)
        if gray_frame.ndim != 2:
            raise ValueError(f"expected a grayscale [H, W] frame, got {gray_frame.shape}")
        faces = self.detect_all(gray_frame)
        return max(faces, key=lambda f: f.confidence).box if faces else None

    def detect_all(self, image: np.ndarray) -> list[Face]:
        """All faces in a uint8 RGB [H, W, 3] or grayscale [H, W] image (replicated to RGB)."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(f"expected a uint8 [H, W] or [H, W, 3] image, got "
                             f"{image.dtype} {image.shape}")
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        boxes = self._propose(image)
        if len(boxes):
            boxes = self._refine(image, boxes)
        if not len(boxes):
            return []
        boxes, landmarks = self._output(image, boxes)
        faces = []
        for box, points in zip(boxes, landmarks, strict=True):
            x, y = max(0, int(box[0])), max(0, int(box[1]))
            faces.append(Face((x, y, int(box[2] - x), int(box[3] - y)), float(box[4]), points))
        return faces

    def _propose(self, image: np.ndarray) -> np.ndarray:
        """Stage 1 (P-Net over the pyramid) -> squared integer boxes [N, 5] (corners, score)."""
        h, w = image.shape[:2]
        found = [np.empty((0, 9))]
        for scale in pyramid_scales(h, w, self.min_face_size, self.scale_factor):
            size = (int(np.ceil(w * scale)), int(np.ceil(h * scale)))
            level = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            out = apply_net("pnet", self.params["pnet"], normalize(level)[None])
            boxes = proposals(out["probs"][0, :, :, 1], out["box"][0], scale, self.thresholds[0])
            found.append(boxes[nms(boxes, 0.5, "union")])
        boxes = np.concatenate(found)
        boxes = boxes[nms(boxes, 0.7, "union")]
        wh = boxes[:, 2:4] - boxes[:, 0:2]
        boxes = square(np.hstack([boxes[:, 0:4] + boxes[:, 5:9] * np.tile(wh, 2), boxes[:, 4:5]]))
        boxes[:, 0:4] = np.fix(boxes[:, 0:4])
        return boxes

    def _refine(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Stage 2 (R-Net on 24x24 crops) -> squared boxes [M, 5]."""
        crops = crop_resize(image, boxes, CROP_SIZES["rnet"])
        out = run_net("rnet", self.params["rnet"], normalize(crops))
        score = out["probs"][:, 1]
        keep = score > self.thresholds[1]
        boxes, offsets = np.hstack([boxes[keep, :4], score[keep, None]]), out["box"][keep]
        pick = nms(boxes, 0.7, "union")
        return square(regress(boxes[pick], offsets[pick]))

    def _output(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stage 3 (O-Net on 48x48 crops) -> final boxes [K, 5] and landmarks [K, 5, 2]."""
        boxes = np.fix(boxes)
        crops = crop_resize(image, boxes, CROP_SIZES["onet"])
        out = run_net("onet", self.params["onet"], normalize(crops))
        score = out["probs"][:, 1]
        keep = score > self.thresholds[2]
        boxes = np.hstack([boxes[keep, :4], score[keep, None]])
        wh = boxes[:, 2:4] - boxes[:, 0:2] + 1
        points = out["landmarks"][keep].reshape(-1, 2, 5)  # (x0..x4, y0..y4)
        landmarks = wh[:, :, None] * points + boxes[:, 0:2, None] - 1
        boxes = regress(boxes, out["box"][keep])
        pick = nms(boxes, 0.7, "min")
        return boxes[pick], landmarks[pick].transpose(0, 2, 1)
