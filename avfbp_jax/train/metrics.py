"""Classification metrics from predictions: WA, UA, macro-F1, per-class recall, confusion.

WA (weighted accuracy) is the overall accuracy; UA (unweighted accuracy) is the mean of the
per-class recalls, the IEMOCAP convention. Classes absent from the labels are left out of UA and
macro-F1 (their recall is undefined) and reported as null.
"""

from collections.abc import Sequence

import numpy as np


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """[true, predicted] counts."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (np.asarray(labels, np.int64), np.asarray(preds, np.int64)), 1)
    return cm


def classification_metrics(
    labels: np.ndarray, preds: np.ndarray, class_names: Sequence[str]
) -> dict:
    """WA, UA, macro-F1, per-class recall/precision/F1 and the confusion matrix, as JSON types."""
    n = len(class_names)
    cm = confusion_matrix(labels, preds, n)
    support = cm.sum(1)
    predicted = cm.sum(0)
    tp = np.diag(cm).astype(np.float64)
    present = support > 0
    recall = np.where(present, tp / np.maximum(support, 1), np.nan)
    precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
    recall0 = np.nan_to_num(recall)
    denom = precision + recall0
    f1 = np.where(denom > 0, 2 * precision * recall0 / np.where(denom > 0, denom, 1), 0.0)
    f1 = np.where(present, f1, np.nan)

    def per_class(values):
        pairs = zip(class_names, values, strict=True)
        return {c: (None if np.isnan(v) else float(v)) for c, v in pairs}

    total = int(cm.sum())
    return {
        "num_examples": total,
        "wa": float(tp.sum() / total) if total else float("nan"),
        "ua": float(np.mean(recall[present])) if present.any() else float("nan"),
        "macro_f1": float(np.mean(f1[present])) if present.any() else float("nan"),
        "recall": per_class(recall),
        "precision": per_class(np.where(present | (predicted > 0), precision, np.nan)),
        "f1": per_class(f1),
        "support": {c: int(s) for c, s in zip(class_names, support, strict=True)},
        "confusion": cm.tolist(),
        "classes": list(class_names),
    }


def modality_weights_by_class(
    labels: np.ndarray, weights: np.ndarray, class_names: Sequence[str],
    trunk_has_data: np.ndarray | None = None,
) -> dict:
    """Mean (audio, video) adaptive weights per true class.

    `weights` is [N, 2] (global AG-FBP weights) or [N, trunks, 2] (AM-FBP trunks; averaged over
    the trunks that have data). Shows which modality the model trusts for which emotion.
    """
    weights = np.asarray(weights, np.float64)
    if weights.ndim == 3:
        mask = np.ones(weights.shape[:2]) if trunk_has_data is None else trunk_has_data
        mask = np.asarray(mask, np.float64)[..., None]
        weights = (weights * mask).sum(1) / np.maximum(mask.sum(1), 1)
    out = {}
    for i, name in enumerate(class_names):
        rows = weights[np.asarray(labels) == i]
        if len(rows):
            out[name] = {"audio": float(rows[:, 0].mean()), "video": float(rows[:, 1].mean())}
    return out
