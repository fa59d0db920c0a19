"""The check that every timed variant computes what the reference transcription computes: its
output and its gradients (inputs and every parameter) against the PyTorch twin's, run eagerly in
float32 on the same parameters and on the same inputs (rounded to the variant's dtype first), at
the benchmark's own shapes. A variant that disagrees is not timed (`Disagreement`)."""

from __future__ import annotations

from typing import Any

import numpy as np

# max |variant - reference| / max |reference| per array. float32: GEMMs over thousands of terms
# summed in other orders stay near 1e-6. bfloat16: at least this, and at least twice the twin's
# own bfloat16 (autocast) error on the same array (`tolerances`): rounding every GEMM operand to
# 8 bits costs more where a gradient divides by a small value (the signed square root's slope
# 1 / (2 sqrt|z|)), in torch as in ours.
TOLERANCE = {"f32": 1e-3, "bf16": 5e-2}


class Disagreement(ValueError):
    """A variant's output or gradient is not the reference's: it computes something else."""


def flat(out: Any, dx: Any, dy: Any, dparams: dict[str, Any]) -> dict[str, np.ndarray]:
    """{"out", "x", "y", "params/<path>"} as float32 numpy arrays (TFN's gradients alone are
    1.3 GB at the reference sizes)."""
    res = {"out": out, "x": dx, "y": dy}

    def walk(tree: dict[str, Any], prefix: str) -> None:
        for k, v in tree.items():
            if hasattr(v, "items"):
                walk(v, f"{prefix}/{k}")
            else:
                res[f"{prefix}/{k}"] = v

    walk(dparams, "params")
    return {k: np.asarray(v, np.float32) for k, v in res.items()}


def relative_error(a: np.ndarray, ref: np.ndarray) -> float:
    """max |a - ref| / max |ref|."""
    return float(np.max(np.abs(a - ref)) / max(np.max(np.abs(ref)), 1e-30))


def tolerances(ref: dict[str, np.ndarray], dtype: str,
               twin_low: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """Per array: TOLERANCE[dtype], or twice the error of twin_low (the twin's own result in
    dtype) where that is larger."""
    return {k: max(TOLERANCE[dtype], 0.0 if twin_low is None
                   else 2.0 * relative_error(twin_low[k], r)) for k, r in ref.items()}


def check(variant: str, got: dict[str, np.ndarray], ref: dict[str, np.ndarray],
          tol: dict[str, float]) -> float:
    """The largest relative error of `got` over the reference's arrays; raises Disagreement
    where one exceeds its tolerance, is missing, has another shape or is not finite."""
    worst = 0.0
    for name, r in ref.items():
        if name not in got or got[name].shape != r.shape:
            raise Disagreement(f"{variant}: {name} missing or shaped "
                               f"{getattr(got.get(name), 'shape', None)}, reference {r.shape}")
        err = relative_error(got[name], r) if np.all(np.isfinite(got[name])) else np.inf
        if err > tol[name]:
            raise Disagreement(f"{variant}: {name} differs from the reference twin by "
                               f"{err:.3g} (relative to its largest entry; tolerance "
                               f"{tol[name]:.3g}): not timed")
        worst = max(worst, err)
    return worst
