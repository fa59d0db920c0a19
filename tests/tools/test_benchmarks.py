"""Smoke tests of the benchmark scripts: each runs a tiny --quick sweep and writes valid JSON.

No timing is asserted (speed is measured by the scripts, not by tests); the tests check that
every variant ran, the FLOP counts follow their formulas, the PyTorch twin computes the same
function and gradients as the JAX kernel, and the train step does not recompile after warm-up.
"""

import importlib
import json
import math
import os
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

TOOLS = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "tools")
sys.path.insert(0, os.path.abspath(TOOLS))
bench_common = importlib.import_module("bench_common")
bench_fbp = importlib.import_module("bench_fbp")
bench_train = importlib.import_module("bench_train")


def test_time_interleaved_and_table():
    calls = []
    variants = [bench_common.Variant("a", lambda: calls.append("a"), sync=lambda _: None),
                bench_common.Variant("b", lambda: calls.append("b"), sync=lambda _: None)]
    t = bench_common.time_interleaved(variants, rounds=3, warmup=1, target_s=0)
    assert set(t) == {"a", "b"} and all(len(v.samples) == 3 for v in t.values())
    assert calls[:2] == ["a", "a"]  # warm-up and calibration of a, then b
    assert calls[-2:] == ["a", "b"]  # timed rounds alternate the variants
    text = bench_common.format_table([{"x": 1.5, "y": "long-name"}, {"x": None}],
                                     [("x", "x", ".2f"), ("y", "name", "")])
    lines = text.splitlines()
    assert len(lines) == 4 and len({len(line) for line in lines}) == 1
    assert lines[2].split() == ["1.50", "long-name"] and lines[3].split() == ["-", "-"]


def test_torch_twin_matches_kernel_and_gradients():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    k, o, m, n, b = 3, 4, 6, 5, 7
    arrs = [rng.standard_normal(s).astype(np.float32) * 0.5
            for s in [(b, m), (b, n), (m, k * o), (n, k * o), (k * o,), (k * o,)]]
    g = rng.standard_normal((b, o)).astype(np.float32)

    def loss(*a):
        return jnp.vdot(bench_fbp.fbp_kernel(*a, k=k), g)

    ref_out = bench_fbp.fbp_kernel(*map(jnp.asarray, arrs), k=k)
    ref_grads = jax.grad(loss, argnums=tuple(range(6)))(*map(jnp.asarray, arrs))
    ts = [torch.tensor(a, requires_grad=True) for a in arrs]
    out = bench_fbp.torch_twin(torch)(*ts, k)
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
    got = {t["target"]: (round(t["value"], 6), t["met"]) for t in bench_fbp.targets(cpu, "cpu")}
    at = f"({mfb}, f32, B=4096, cpu)"
    assert got == {f"fbp fwd+bwd <= 1.25x floor {at}": (1.2, True),
                   f"fbp fwd+bwd <= torch eager {at}": (round(1.2 / 1.1, 6), False),
                   f"goal: fbp fwd+bwd <= torch.compile {at}": (round(1.2 / 0.9, 6), False)}
    gpu = _fake_rows(mfb, 8192, "bf16", **{
        "floor|fwd": 1.0, "pallas|fwd": 1.04, "torch.compile|fwd": 1.4,
        "floor|fwd+bwd": 1.0, "pallas:recompute|fwd+bwd": 1.2, "pallas:keep|fwd+bwd": 1.1,
        "torch.compile|fwd+bwd": 1.8})
    got = {t["target"]: t["met"] for t in bench_fbp.targets(gpu, "gpu")}
    at = f"({mfb}, bf16, B=8192, gpu)"
    assert got == {f"pallas fwd <= 1.05x floor {at}": True,
                   f"pallas fwd >= 1.5x faster than torch.compile {at}": False,
                   f"pallas:recompute fwd+bwd <= 1.15x floor {at}": False,
                   f"pallas:recompute fwd+bwd >= 1.5x faster than torch.compile {at}": True,
                   f"pallas:keep fwd+bwd <= 1.15x floor {at}": True,
                   f"pallas:keep fwd+bwd >= 1.5x faster than torch.compile {at}": True}
    small = _fake_rows(mfb, 4096, "bf16", **{"floor|fwd": 1.0, "pallas|fwd": 1.0})
    assert bench_fbp.targets(small, "gpu") == []  # the GPU targets need B >= 8192


def test_bench_fbp_times_both_pallas_residual_strategies(monkeypatch):
    # A stand-in for avfbp_jax.ops.fbp_pallas (written elsewhere): records how it is called.
    calls = []

    def fbp_pallas(x, y, w_x, w_y, b_x, b_y, *, k, residuals="recompute"):
        calls.append(residuals)
        return bench_fbp.fbp_kernel(x, y, w_x, w_y, b_x, b_y, k=k)

    module = types.ModuleType("avfbp_jax.ops.fbp_pallas")
    module.fbp_pallas = fbp_pallas
    monkeypatch.setitem(sys.modules, "avfbp_jax.ops.fbp_pallas", module)
    res = bench_fbp.run_benchmark([(16, 8, 5, 4)], [8], ["f32"], list(bench_fbp.MODES),
                                  ["pallas"], rounds=1, warmup=1, target_ms=0.0, gemm_size=64,
                                  force_pallas=True, log=lambda _: None)
    assert {(r["variant"], r["mode"]) for r in res["rows"]} == {
        ("pallas", "fwd"), ("pallas:recompute", "fwd+bwd"), ("pallas:keep", "fwd+bwd")}
    assert set(calls) == {"recompute", "keep"}
    with pytest.raises(ValueError, match="impls"):
        bench_fbp.run_benchmark([(16, 8, 5, 4)], [8], ["f32"], ["fwd"], ["cuda"], rounds=1)


def test_bench_train_quick_writes_json_without_recompiles(tmp_path):
    out = tmp_path / "train.json"
    argv = ["--quick", "--fusions", "amfbp", "--devices", "all", "--sections", "step,compiles",
            "--out", str(out)]
    assert bench_train.main(argv) == 0
    res = json.loads(out.read_text())
    rows = res["step"]
    assert [r["fusion"] for r in rows] == ["amfbp"]
    assert {r["devices"] for r in rows} == {jax.device_count()}
    for r in rows:
        assert r["samples_per_s"] > 0 and r["compile_s"] > 0
        assert r["gflop_per_sample"] > 0 and r["pct_peak"] > 0
    comp = res["compiles"]
    assert comp["warmup_shapes"] == 2 and comp["steps_after_warmup"] == 4
    assert comp["compiles_after_warmup"] == 0
