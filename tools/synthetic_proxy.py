"""Sanity check of the synthetic corpus's cue design with hand-crafted features (no training).

Decodes every clip with the real decoders (read_audio, read_video, FaceCropper), computes a few
per-clip prosody statistics from the audio (pitch, energy, spectral tilt, syllable rate, each as
its within-clip contrast) and mouth-curvature / brow-slant statistics from the face crops, then
fits a softmax regression in numpy on the train split and reports accuracy on val+test for
audio-only, video-only and both. Also reports the face detection rate. The features are
deliberately crude (the video side measures only the mouth), so the numbers bound from below
what the cues allow; the trained models are the real measurement.

  python3 -m tools.synthetic_proxy CORPUS_DIR [--json OUT.json] [--workers 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from avfbp_jax import atomic
from avfbp_jax.data.faces import FaceCropper
from avfbp_jax.data.media import read_audio, read_video

SR = 16000


def _windowed_contrast(x: np.ndarray, width: int) -> tuple[float, float]:
    """Max and min of a `width`-frame moving average of x, minus x's median."""
    if len(x) < width:
        width = max(1, len(x))
    avg = np.convolve(x, np.ones(width) / width, mode="valid")
    med = np.median(x)
    return float(avg.max() - med), float(med - avg.min())


def audio_features(audio: np.ndarray) -> np.ndarray:
    hop, win = 160, 640
    n = 1 + (len(audio) - win) // hop
    frames = audio[np.arange(n)[:, None] * hop + np.arange(win)[None, :]] * np.hanning(win)
    spec = np.abs(np.fft.rfft(frames, 1024, axis=1)) ** 2
    energy = 10 * np.log10(spec.sum(1) + 1e-10)
    voiced = energy > np.percentile(energy, 40)
    freqs = np.fft.rfftfreq(1024, 1 / SR)
    high = spec[:, (freqs > 1500) & (freqs < 5000)].sum(1)
    tilt = 10 * np.log10(high + 1e-10) - 10 * np.log10(spec[:, freqs < 1000].sum(1) + 1e-10)
    ac = np.fft.irfft(spec, 1024, axis=1)[:, : SR // 60]
    lo, hi = SR // 400, SR // 70
    lag = lo + np.argmax(ac[:, lo:hi], axis=1)
    log_f0 = np.log(SR / lag)
    f0v, tv, ev = log_f0[voiced], tilt[voiced], energy[voiced]
    env = np.convolve((energy > np.percentile(energy, 40)).astype(float), np.ones(5) / 5, "same")
    onsets = np.flatnonzero(np.diff((env > 0.5).astype(int)) == 1)
    rate = np.zeros(len(energy))
    rate[onsets] = 1.0
    feats = [
        *_windowed_contrast(f0v, 50),
        *_windowed_contrast(tv, 50),
        *_windowed_contrast(ev, 50),
        *_windowed_contrast(rate * 100, 100),  # syllable onsets per second, 1 s windows
        float(np.percentile(f0v, 90) - np.percentile(f0v, 10)),
        float(np.std(np.diff(f0v))) if len(f0v) > 1 else 0.0,
    ]
    return np.array(feats)


def mouth_curvature(crop: np.ndarray) -> float:
    """Smile (+) / frown (-) of the mouth in one face crop, NaN if no mouth blob is found.

    The mouth is the largest dark blob (below 0.75 x the skin level) centred in the lower face;
    curvature is the mean row of its middle third minus that of its outer thirds, over its width.
    """
    s = crop.shape[0]
    skin = np.median(crop[int(0.35 * s) : int(0.7 * s), int(0.3 * s) : int(0.7 * s)])
    count, labels, stats, centers = cv2.connectedComponentsWithStats(
        (crop < 0.75 * skin).astype(np.uint8)
    )
    best, area = -1, 8
    for k in range(1, count):
        cx, cy = centers[k]
        lower_middle = 0.55 * s < cy < 0.9 * s and 0.3 * s < cx < 0.7 * s
        if lower_middle and stats[k, cv2.CC_STAT_AREA] > area and stats[k, 2] < 0.6 * s:
            best, area = k, stats[k, cv2.CC_STAT_AREA]
    if best < 0:
        return float("nan")
    ys, xs = np.nonzero(labels == best)
    width = stats[best, cv2.CC_STAT_WIDTH]
    u = (xs - stats[best, cv2.CC_STAT_LEFT]) / max(width - 1, 1)
    middle = (u > 1 / 3) & (u < 2 / 3)
    if middle.all() or not middle.any():
        return float("nan")
    return float((ys[middle].mean() - ys[~middle].mean()) / width)


def video_features(crops: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Within-clip contrast and level of the mouth curvature (brows are not measured)."""
    curv = np.array([mouth_curvature(c) for c in crops[found]])
    curv = curv[np.isfinite(curv)]
    if len(curv) == 0:
        curv = np.zeros(1)
    return np.array(
        [*_windowed_contrast(curv, 5), np.median(curv), *np.percentile(curv, [90, 10])]
    )


def clip_features(path_stem: str) -> tuple[np.ndarray, np.ndarray, int, int]:
    audio = read_audio(path_stem + ".wav")
    frames, _ = read_video(path_stem + ".avi")
    crops, found = FaceCropper().crop_frames(frames)
    return audio_features(audio), video_features(crops, found), int(found.sum()), len(found)


def softmax_regression(x, y, classes, l2=1e-2, steps=3000, lr=0.5):
    w = np.zeros((x.shape[1], classes))
    b = np.zeros(classes)
    onehot = np.eye(classes)[y]
    for _ in range(steps):
        z = x @ w + b
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        g = (p - onehot) / len(x)
        w -= lr * (x.T @ g + l2 * w)
        b -= lr * g.sum(0)
    return w, b


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus")
    parser.add_argument("--json")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    root = Path(args.corpus)
    meta = json.loads((root / "corpus.json").read_text())
    classes = meta["classes"]
    rows = list(csv.DictReader(open(root / "splits.csv")))
    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(clip_features, [str(root / r["clip"]) for r in rows], chunksize=8))
    seconds = time.perf_counter() - start
    labels = np.array([classes.index(r["clip"].split("/")[0]) for r in rows])
    train = np.array([r["split"] == "train" for r in rows])
    feats = {
        "audio": np.stack([r[0] for r in results]),
        "video": np.stack([r[1] for r in results]),
    }
    feats["both"] = np.concatenate([feats["audio"], feats["video"]], axis=1)
    report = {
        "clips": len(rows),
        "decode_and_detect_s": round(seconds, 1),
        "face_detection_rate": sum(r[2] for r in results) / sum(r[3] for r in results),
    }
    for name, x in feats.items():
        mu, sd = x[train].mean(0), x[train].std(0) + 1e-8
        x = (x - mu) / sd
        w, b = softmax_regression(x[train], labels[train], len(classes))
        pred = np.argmax(x @ w + b, axis=1)
        test = ~train
        conf = np.zeros((len(classes), len(classes)), int)
        np.add.at(conf, (labels[test], pred[test]), 1)
        report[name] = {
            "train_acc": float((pred[train] == labels[train]).mean()),
            "heldout_acc": float((pred[test] == labels[test]).mean()),
            "confusion": conf.tolist(),
        }
    print(json.dumps(report, indent=1))
    if args.json:
        atomic.write_json(args.json, report)


if __name__ == "__main__":
    main()
