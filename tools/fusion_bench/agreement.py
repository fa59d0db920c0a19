"""The check that every timed variant computes what the reference transcription computes: its
output and its gradients (inputs and every parameter) against the PyTorch twin's, run eagerly in
float64 on the same parameters and on the same inputs (rounded to the variant's dtype first), at
the benchmark's own shapes. A variant that disagrees is not timed (`Disagreement`).

The error of an array is norm-wise, ||variant - reference|| / ||reference||: a relu whose input
rounds across 0 changes single entries completely, which a max-based error would report as a
100% error of the whole array. Rounding error is noise whose size depends on the function: through
the signed square root (1 / (2 sqrt|z|) in the gradient) a few small |z| make two float32
programs' gradient errors differ up to 20 times either way at the reference sizes (measured:
BLOCK 0.075 ours, 0.004 the twin; FBP 0.018 and 0.003; tests/ops/fusion_checks.py saw 0.1 to
10 times on smaller ones), and in bfloat16 the gradients of FBP and BLOCK are noise altogether
(errors near 1 in torch as in ours). So each array's tolerance is SPREAD times its noise
(`noise`: the largest of the twin's own errors in float32 and in the variant's dtype and of the
float64 twin on inputs perturbed by one rounding), at least TOLERANCE; an array whose tolerance
would exceed UNDECIDABLE cannot tell a different computation (which differs by about 100%) from
noise and is not compared (the row lists it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

SPREAD = 20.0
TOLERANCE = {"f32": 1e-4, "bf16": 1e-2}
UNDECIDABLE = 0.5
EPS = {"f32": 2.0**-24, "bf16": 2.0**-8}  # unit roundoff: the inputs' perturbation in `noise`


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
    """||a - ref|| / ||ref|| (2-norm over all entries, in float64)."""
    a, ref = np.asarray(a, np.float64).ravel(), np.asarray(ref, np.float64).ravel()
    return float(np.linalg.norm(a - ref) / max(np.linalg.norm(ref), 1e-300))


def tolerances(ref: dict[str, np.ndarray], dtype: str, noisy: list[dict[str, np.ndarray]]
               ) -> dict[str, float | None]:
    """Per array: max(TOLERANCE[dtype], SPREAD x its noise), its noise the largest error of
    the `noisy` results (see the module doc); None where that exceeds UNDECIDABLE."""
    out = {}
    for k, r in ref.items():
        tol = max([TOLERANCE[dtype], *(SPREAD * relative_error(o[k], r) for o in noisy)])
        out[k] = tol if tol <= UNDECIDABLE else None
    return out


def check(variant: str, got: dict[str, np.ndarray], ref: dict[str, np.ndarray],
          tol: dict[str, float | None]) -> float:
    """The largest error of `got` over the reference's decidable arrays (tolerance not None);
    raises Disagreement where one exceeds its tolerance, is missing, has another shape or is not
    finite."""
    worst = 0.0
    for name, r in ref.items():
        if name not in got or got[name].shape != r.shape:
            raise Disagreement(f"{variant}: {name} missing or shaped "
                               f"{getattr(got.get(name), 'shape', None)}, reference {r.shape}")
        if tol[name] is None:
            continue
        err = relative_error(got[name], r) if np.all(np.isfinite(got[name])) else np.inf
        if err > tol[name]:
            raise Disagreement(f"{variant}: {name} differs from the reference twin by "
                               f"{err:.3g} (norm-wise; tolerance {tol[name]:.3g}): not timed")
        worst = max(worst, err)
    return worst
