"""The one comparison of a JAX array against its PyTorch reference transcription.

The reference runs twice, in float64 (the truth) and in float32 (what float32 rounding alone
costs at this shape). Ours must be within max(rel, 2 x the float32 reference's own error) of
the float64 result, relative to the largest magnitude: at the reference libraries' sizes a
normalised output's float32 rounding alone exceeds 1e-5, in torch as in JAX.
"""

import numpy as np


def relative_error(a, b) -> float:
    """max |a - b| / max |b| (b the reference), in float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def assert_matches_reference(ours, ref64, ref32, name: str, rel: float = 1e-5) -> None:
    """Asserts ours equals the float64 reference to max(rel, 2 x float32-reference error)."""
    ours, ref64, ref32 = (np.asarray(v) for v in (ours, ref64, ref32))
    assert ours.shape == ref64.shape, f"{name}: shape {ours.shape} != reference {ref64.shape}"
    assert np.all(np.isfinite(ours)), f"{name}: non-finite values"
    tol = max(rel, 2.0 * relative_error(ref32, ref64))
    err = relative_error(ours, ref64)
    assert err <= tol, f"{name}: relative error {err:.3g} > {tol:.3g}"
