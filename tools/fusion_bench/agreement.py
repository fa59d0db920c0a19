"""The check that every timed variant computes what the reference transcription computes: its
output and its gradients (inputs and every parameter) against the PyTorch twin's, run eagerly in
float64 on the same parameters and on the same inputs (rounded to the variant's dtype first), at
the benchmark's own shapes. A variant that disagrees is not timed (`Disagreement`)."""

from __future__ import annotations

from typing import Any

import numpy as np

# max |variant - reference| / max |reference| per array, the reference being the twin in float64.
# A variant's rounding error is one draw: through the signed square root (1 / (2 sqrt|z|) in the
# gradient) a few small |z| make two float32 programs' errors differ 0.1 to 10 times either way
# (tests/ops/fusion_checks.py; FBP at the reference sizes: 0.033 ours, 0.0033 the twin, another
# batch 0.001 both). So a variant may differ by SPREAD times the twin's own error in its dtype
# (float32 parameters; bfloat16 by autocast), and at least by TOLERANCE; something else
# computed differs by the size of the values themselves.
SPREAD = 20.0
TOLERANCE = {"f32": 1e-4, "bf16": 5e-2}


class Disagreement(ValueError):
    """A variant's output or gradient is not the reference's: it computes something else."""


def flat(out: Any, dx: Any, dy: Any, dparams: dict[str, Any], rows: int
         ) -> dict[str, np.ndarray]:
    """{"out", "x", "y" (their first `rows` rows), "params/<path>"} as float32 numpy arrays
    (TFN's gradients alone are 1.3 GB at the reference sizes; float32 rounding of the float64
    truth, 6e-8 relative, is far below every tolerance)."""
    res = {"out": np.asarray(out)[:rows], "x": np.asarray(dx)[:rows],
           "y": np.asarray(dy)[:rows]}

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


def tolerances(ref: dict[str, np.ndarray], dtype: str, own: list[dict[str, np.ndarray]]
               ) -> dict[str, float]:
    """Per array: TOLERANCE[dtype], or SPREAD times the largest error of the twin's own results
    `own` (in float32, and in dtype) where that is larger."""
    return {k: max([TOLERANCE[dtype], *(SPREAD * relative_error(o[k], r) for o in own)])
            for k, r in ref.items()}


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
