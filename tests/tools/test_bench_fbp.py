"""Smoke tests of the FBP kernel benchmark (python3 -m tools.bench_fbp, tools/fbp_bench/): a tiny
--quick sweep writes valid JSON with every variant, the FLOP and byte counts follow their formulas,
the PyTorch twin computes the same function and gradients as the JAX kernel, and the targets are
read off the rows. No timing is asserted (speed is measured by the tool, not by tests).
"""

import json
import math
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avfbp_jax.ops import fbp as fbp_kernel
from tools import bench_fbp
from tools.fbp_bench import sweep


def test_torch_twin_matches_kernel_and_gradients():
    torch = pytest.importorskip("torch")
    from tools.torch_twins.fbp import fbp

    rng = np.random.default_rng(3)
    k, o, m, n, b = 3, 4, 6, 5, 7
    arrs = [rng.standard_normal(s).astype(np.float32) * 0.5
            for s in [(b, m), (b, n), (m, k * o), (n, k * o), (k * o,), (k * o,)]]
    g = rng.standard_normal((b, o)).astype(np.float32)

    def loss(*a):
        return jnp.vdot(fbp_kernel(*a, k=k), g)

    ref_out = fbp_kernel(*map(jnp.asarray, arrs), k=k)
    ref_grads = jax.grad(loss, argnums=tuple(range(6)))(*map(jnp.asarray, arrs))
    ts = [torch.tensor(a, requires_grad=True) for a in arrs]
    out = fbp(*ts, k)
    (out * torch.from_numpy(g)).sum().backward()
    np.testing.assert_allclose(out.detach().numpy(), ref_out, rtol=1e-5, atol=1e-6)
    for t, ref in zip(ts, ref_grads, strict=True):
        np.testing.assert_allclose(t.grad.numpy(), ref, rtol=1e-4, atol=1e-5)


def test_bench_fbp_quick_writes_json(tmp_path):
    out = tmp_path / "fbp.json"
    assert bench_fbp.main(["--quick", "--no-torch-compile", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    rows = res["rows"]
    want = {("floor", "fwd"), ("floor", "fwd+bwd"), ("fbp", "fwd"), ("fbp", "fwd+bwd"),
            ("fbp+dropout", "fwd+bwd"), ("naive", "fwd"), ("naive", "fwd+bwd")}
    try:
        import torch  # noqa: F401

        want |= {("torch", "fwd"), ("torch", "fwd+bwd"), ("floor:torch", "fwd"),
                 ("floor:torch", "fwd+bwd")}
    except ImportError:
        pass
    for dtype in ("f32", "bf16"):
        numpy_floor = {("floor:numpy", "fwd"), ("floor:numpy", "fwd+bwd")}
        numpy_floor = numpy_floor if dtype == "f32" else set()  # numpy has no bf16 GEMM
        for batch in (8, 32):
            got = {(r["variant"], r["mode"]) for r in rows
                   if r["dtype"] == dtype and r["batch"] == batch}
            assert got == want | numpy_floor, (dtype, batch)
    for r in rows:
        assert r["median_s"] > 0 and r["p25_s"] <= r["median_s"] <= r["p75_s"]
        assert len(r["samples_s"]) == 3
        m, n, k, o, b = r["m"], r["n"], r["k"], r["o"], r["batch"]
        fwd = 2 * b * o * n * (m + 1) if r["variant"] == "naive" else 2 * b * (m + n) * k * o
        assert r["flops"] == (fwd if r["mode"] == "fwd" else 3 * fwd)
        assert math.isclose(r["gflops_per_s"], r["flops"] / r["median_s"] / 1e9)
        assert math.isclose(r["pct_peak"], 100 * r["gflops_per_s"] / r["peak_gflops_per_s"])
        floors = [q["gflops_per_s"] for q in rows if q["variant"].startswith("floor")
                  and (q["dims"], q["dtype"], q["batch"]) == (r["dims"], r["dtype"], r["batch"])]
        assert math.isclose(r["machine_peak_gflops_per_s"],
                            max(*r["gemm_peaks_gflops_per_s"].values(), *floors))
        assert math.isclose(r["compute_floor_ms"],
                            r["flops"] / r["machine_peak_gflops_per_s"] / 1e6)
        assert math.isclose(r["memory_floor_ms"], r["bytes"] / r["bandwidth_gb_per_s"] / 1e6)
        assert math.isclose(r["x_physical"],
                            r["ms"] / max(r["compute_floor_ms"], r["memory_floor_ms"]))
        assert r["input_copies"] > 1  # tiny inputs fit in a cache: the calls rotate
        assert r["minor_faults_per_call"] >= 0 and r["host_cpu_ms_per_call"] >= 0
        if r["variant"] == "fbp" and r["dtype"] == "f32":  # 4-byte inputs, weights, biases, out
            reads = 4 * (b * (m + n) + (m + n) * k * o + 2 * k * o)
            assert r["bytes"] == (reads + 4 * b * o if r["mode"] == "fwd"
                                  else 2 * reads + 8 * b * o)
    assert set(res["gemm_peak_gflops_per_s"]) == {"f32", "bf16"}
    assert "numpy" in res["gemm_peaks_by_library_gflops_per_s"]["f32"]
    assert res["bandwidth_gb_per_s"] > 0
    assert any(n.startswith("pallas: not timed on CPU") for n in res["notes"])
    assert any(n.startswith("mosaic: not timed on CPU") for n in res["notes"])
    assert res["targets"] == []  # the targets are stated at the MFB size, not in a quick run


def _fake_rows(dims, batch, dtype, **ms_by_variant_mode):
    """Rows as bench_shape writes them, with the given median seconds per "variant|mode"."""
    return [{"dims": dims, "batch": batch, "dtype": dtype, "variant": key.split("|")[0],
             "mode": key.split("|")[1], "median_s": s} for key, s in ms_by_variant_mode.items()]


def test_bench_fbp_targets_from_rows():
    mfb = "512x512x5x1000"
    cpu = _fake_rows(mfb, 4096, "f32", **{"floor|fwd+bwd": 1.0, "fbp|fwd+bwd": 1.2,
                                          "torch|fwd+bwd": 1.1, "torch.compile|fwd+bwd": 0.9})
    cpu += _fake_rows(mfb, 64, "f32", **{"floor|fwd+bwd": 1.0, "fbp|fwd+bwd": 9.0})
    got = {t["target"]: (round(t["value"], 6), t["met"]) for t in sweep.targets(cpu, "cpu")}
    at = f"({mfb}, f32, B=4096, cpu)"
    assert got == {f"fbp fwd+bwd <= 1.25x floor {at}": (1.2, True),
                   f"fbp fwd+bwd <= torch eager {at}": (round(1.2 / 1.1, 6), False),
                   f"goal: fbp fwd+bwd <= torch.compile {at}": (round(1.2 / 0.9, 6), False)}
    gpu = _fake_rows(mfb, 8192, "bf16", **{
        "floor|fwd": 1.0, "pallas|fwd": 1.04, "torch.compile|fwd": 1.4,
        "floor|fwd+bwd": 1.0, "pallas:recompute|fwd+bwd": 1.2, "pallas:keep|fwd+bwd": 1.1,
        "torch.compile|fwd+bwd": 1.8})
    got = {t["target"]: t["met"] for t in sweep.targets(gpu, "gpu")}
    at = f"({mfb}, bf16, B=8192, gpu)"
    assert got == {f"pallas fwd <= 1.05x floor {at}": True,
                   f"pallas fwd >= 1.5x faster than torch.compile {at}": False,
                   f"pallas:recompute fwd+bwd <= 1.15x floor {at}": False,
                   f"pallas:recompute fwd+bwd >= 1.5x faster than torch.compile {at}": True,
                   f"pallas:keep fwd+bwd <= 1.15x floor {at}": True,
                   f"pallas:keep fwd+bwd >= 1.5x faster than torch.compile {at}": True}
    small = _fake_rows(mfb, 4096, "bf16", **{"floor|fwd": 1.0, "pallas|fwd": 1.0})
    assert sweep.targets(small, "gpu") == []  # the GPU targets need B >= 8192


def test_bench_fbp_times_both_pallas_residual_strategies(monkeypatch):
    # A stand-in for avfbp_jax.ops.fbp_pallas (written elsewhere): records how it is called.
    calls = []

    def fbp_pallas(x, y, w_x, w_y, b_x, b_y, *, k, residuals="recompute"):
        calls.append(residuals)
        return fbp_kernel(x, y, w_x, w_y, b_x, b_y, k=k)

    module = types.ModuleType("avfbp_jax.ops.fbp_pallas")
    module.fbp_pallas = fbp_pallas
    monkeypatch.setitem(sys.modules, "avfbp_jax.ops.fbp_pallas", module)
    res = sweep.run_benchmark([(16, 8, 5, 4)], [8], ["f32"], list(sweep.MODES),
                                  ["pallas"], rounds=1, warmup=1, target_ms=0.0, gemm_size=64,
                                  force_pallas=True, log=lambda _: None)
    assert {(r["variant"], r["mode"]) for r in res["rows"]} == {
        ("pallas", "fwd"), ("pallas:recompute", "fwd+bwd"), ("pallas:keep", "fwd+bwd")}
    assert set(calls) == {"recompute", "keep"}
    with pytest.raises(ValueError, match="impls"):
        sweep.run_benchmark([(16, 8, 5, 4)], [8], ["f32"], ["fwd"], ["cuda"], rounds=1)


@pytest.mark.parametrize("fails", [False, True])
def test_bench_fbp_mosaic_variant_or_a_note_when_it_fails(monkeypatch, fails):
    # A stand-in for avfbp_jax.ops.fbp_mosaic: fbp with its outputs off by 1e-3 of their scale,
    # or (fails) a kernel whose compilation fails, as Mosaic GPU's may on a device.
    def fbp_mosaic(x, y, w_x, w_y, b_x, b_y, *, k):
        if fails:
            raise RuntimeError("Mosaic GPU kernel compilation failed\n  detail")
        return fbp_kernel(x, y, w_x, w_y, b_x, b_y, k=k) * 1.001

    module = types.ModuleType("avfbp_jax.ops.fbp_mosaic")
    module.fbp_mosaic = fbp_mosaic
    monkeypatch.setitem(sys.modules, "avfbp_jax.ops.fbp_mosaic", module)
    res = sweep.run_benchmark([(16, 8, 5, 4)], [8], ["f32"], list(sweep.MODES),
                              ["xla", "mosaic"], rounds=1, warmup=1, target_ms=0.0,
                              gemm_size=64, force_pallas=True, log=lambda _: None)
    variants = {(r["variant"], r["mode"]) for r in res["rows"]}
    mosaic = {("mosaic", "fwd"), ("mosaic", "fwd+bwd")}
    xla = {("fbp", "fwd"), ("fbp", "fwd+bwd"), ("fbp+dropout", "fwd+bwd")}
    assert variants == xla | (set() if fails else mosaic)  # a failure stops only that variant
    label = "16x8x5x4 f32 B=8"
    if fails:
        assert [n for n in res["notes"] if n.startswith("mosaic")] == [
            f"mosaic {label} {mode}: not timed, RuntimeError: Mosaic GPU kernel compilation "
            "failed detail" for mode in sweep.MODES]
    else:
        assert f"mosaic {label}: forward max |z - fbp z| = 1.0e-03 of max |fbp z|" in res["notes"]
