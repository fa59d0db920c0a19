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

        want |= {("torch", "fwd"), ("torch", "fwd+bwd")}
    except ImportError:
        pass
    for dtype in ("f32", "bf16"):
        for batch in (8, 32):
            got = {(r["variant"], r["mode"]) for r in rows
                   if r["dtype"] == dtype and r["batch"] == batch}
            assert got == want, (dtype, batch)
    for r in rows:
        assert r["median_s"] > 0 and r["p25_s"] <= r["median_s"] <= r["p75_s"]
        assert len(r["samples_s"]) == 3
        m, n, k, o, b = r["m"], r["n"], r["k"], r["o"], r["batch"]
        fwd = 2 * b * o * n * (m + 1) if r["variant"] == "naive" else 2 * b * (m + n) * k * o
        assert r["flops"] == (fwd if r["mode"] == "fwd" else 3 * fwd)
        assert math.isclose(r["gflops_per_s"], r["flops"] / r["median_s"] / 1e9)
        assert math.isclose(r["pct_peak"], 100 * r["gflops_per_s"] / r["peak_gflops_per_s"])
    assert set(res["gemm_peak_gflops_per_s"]) == {"f32", "bf16"}
    assert res["targets"] == []  # the targets are stated at the MFB size, not in a quick run
    assert bench_fbp.targets([dict(r, dims="512x512x5x1000") for r in rows], "cpu")[0]["target"] \
        .startswith("fbp fwd+bwd <= 1.25x floor (512x512x5x1000, f32, B=32")


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
