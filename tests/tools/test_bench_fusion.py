"""The fusion family benchmark (python3 -m tools.bench_fusion, tools/fusion_bench/): a --quick run
times every member in both modes after checking it against its PyTorch twin, a variant that
computes something else is refused, the floors are the modules' own GEMMs, and the FLOP and byte
counts follow their formulas. No speed is asserted (the tool measures speed, tests do not).
"""

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avfbp_jax.models.config import tiny_model_config
from avfbp_jax.models.fusion import fusion_op
from tools import bench_fusion
from tools.fusion_bench import agreement, members
from tools.fusion_bench.member_bench import MODES
from tools.fusion_bench.sweep import FAMILY, run_benchmark

M, N = bench_fusion.QUICK_INPUTS


@pytest.mark.slow
def test_quick_run_times_every_member_after_checking_it(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "fusion.json"
    assert bench_fusion.main(["--quick", "--dtypes", "f32", "--rounds", "2",
                              "--no-torch-compile", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert FAMILY == ("fbp", "mfh", "mlb", "mutan", "tucker", "block", "mcb", "tfn", "lmf")
    assert [(r["member"], r["mode"]) for r in res["rows"]] == [
        (name, mode) for name in FAMILY for mode in MODES]
    cfg = tiny_model_config()
    for r in res["rows"]:
        for key in ("ms", "floor_ms", "torch_ms", "physical_ms", "floor_physical_ms", "flops",
                    "bytes", "machine_peak_gflops_per_s", "bandwidth_gb_per_s"):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r["member"])
        assert r["torch_compile_ms"] is None  # --no-torch-compile
        assert math.isclose(r["x_floor"], r["ms"] / r["floor_ms"])
        assert math.isclose(r["torch_over_ours"], r["torch_ms"] / r["ms"])
        assert math.isclose(r["physical_ms"], 1e3 * max(
            r["flops"] / (r["machine_peak_gflops_per_s"] * 1e9),
            r["bytes"] / (r["bandwidth_gb_per_s"] * 1e9)))
        # checked before timing: ours against the float64 twin, the twin's own f32 error kept
        errors = r["error_vs_twin"]
        assert set(errors) == {"ours", "torch"} and errors["ours"] < 1e-3, errors
        assert r["unchecked_arrays"] == []
        assert r["settings"] == members.settings(cfg, r["member"])
        assert len(r["timings"]["ours"]["samples_s"]) == 2
    fbp = {r["mode"]: r for r in res["rows"] if r["member"] == "fbp"}
    b, k, o = 8, cfg.fbp_k, cfg.fbp_o
    assert fbp["fwd"]["flops"] == 2 * b * (M + N) * k * o
    assert fbp["fwd+bwd"]["flops"] == 3 * fbp["fwd"]["flops"]
    params = fbp["fwd"]["params"]
    assert params == (M + N) * k * o + 2 * k * o
    reads = 4 * (b * (M + N) + params)  # f32 inputs and parameters
    assert fbp["fwd"]["bytes"] == reads + 4 * b * o
    assert fbp["fwd+bwd"]["bytes"] == 2 * reads + 8 * b * o
    assert res["inputs"] == {"m": M, "n": N} and res["errors"] == [] and res["skipped"] == []


class _Wrong:
    """A twin builder whose output is 1% off: a variant computing something else."""

    def __init__(self, build):
        self.build = build

    def __call__(self, *args):
        twin = self.build(*args)
        call = twin.call
        return dataclasses.replace(twin, call=lambda x, y: 1.01 * call(x, y))


@pytest.mark.slow
def test_a_variant_that_computes_something_else_is_not_timed(monkeypatch):
    pytest.importorskip("torch")
    lmf = members.MEMBERS["lmf"]
    monkeypatch.setitem(members.MEMBERS, "lmf", dataclasses.replace(lmf, twin=_Wrong(lmf.twin)))
    run = lambda **kw: run_benchmark(tiny_model_config(), ["lmf"], (M, N), [4], ["f32"],
                                     ["fwd"], rounds=1, warmup=1, target_ms=0.0, gemm_size=32,
                                     torch_compile=False, log=lambda _: None, **kw)
    with pytest.raises(agreement.Disagreement, match="lmf f32 B=4 ours: out differs"):
        run()
    res = run(keep_going=True)  # the device suite's way: recorded, and the sweep goes on
    assert res["rows"] == [] and len(res["errors"]) == 1
    assert "Disagreement" in res["errors"][0]


@pytest.mark.slow
def test_bf16_twins_by_autocast_or_a_note():
    pytest.importorskip("torch")
    res = run_benchmark(tiny_model_config(), ["mcb", "tucker"], (M, N), [4], ["bf16"], ["fwd"],
                        rounds=1, warmup=1, target_ms=0.0, gemm_size=32, torch_compile=False,
                        log=lambda _: None)
    got = {r["member"]: r for r in res["rows"]}
    # MCB: sketches and FFTs in float32, linear_out autocast; the twin's own bf16 error is kept
    assert got["mcb"]["torch_ms"] > 0 and 0 < got["mcb"]["error_vs_twin"]["torch"] < 0.1
    # torch.nn.Bilinear has no autocast: Tucker's twin is not timed in bf16, ours still checked
    assert got["tucker"]["torch_ms"] is None
    assert set(got["tucker"]["error_vs_twin"]) == {"ours"}
    assert any("tucker bf16 B=4: the twin does not run under autocast" in n for n in res["notes"])


@pytest.mark.parametrize("name", FAMILY)
def test_floor_weights_are_the_modules_weight_matrices(name):
    # Every weight operand of the floor is one of the module's weight tensors (ndim >= 2 and
    # more than one row: LMF's (1, rank) fusion weights and (1, o) bias are not GEMM operands).
    cfg = tiny_model_config()
    b, s = 3, members.settings(cfg, name)
    module = fusion_op(cfg, name, jnp.float32, name)
    x, y = jnp.zeros((b, M)), jnp.zeros((b, N))
    leaves = jax.tree.leaves(jax.eval_shape(module.init, jax.random.key(0), x, y)["params"])
    weights = sorted(math.prod(v.shape) for v in leaves if v.ndim >= 2 and v.shape[0] > 1)
    ops = members.MEMBERS[name].floor(b, M, N, s)
    floor_weights = sorted(math.prod(shape) for op in ops
                           for shape, _, per_call in op.operands(jnp.float32) if not per_call)
    assert floor_weights == weights


def test_floor_op_flops_and_the_fft_convolution():
    g = members.Gemm(2, 3, 20)
    assert g.flops("fwd") == 2 * 2 * 3 * 20 and g.flops("fwd+bwd") == 3 * g.flops("fwd")
    f = members.FFTConv(2, 8)
    assert f.flops("fwd") == 2 * (3 * 2.5 * 8 * 3 + 6 * 5)
    assert f.flops("fwd+bwd") == 2 * f.flops("fwd")
    # The FFT convolution is the circular convolution, as MCB's compact bilinear pooling needs.
    rng = np.random.default_rng(0)
    a, c = rng.standard_normal((2, 8)), rng.standard_normal((2, 8))
    want = np.array([[sum(a[r, i] * c[r, (j - i) % 8] for i in range(8)) for j in range(8)]
                     for r in range(2)])
    np.testing.assert_allclose(f(jnp.asarray(a), jnp.asarray(c)), want, rtol=1e-5, atol=1e-5)


def test_tolerances_scale_with_the_noise_and_give_up_where_it_is_too_large():
    ref = {"out": np.array([3.0, -4.0]), "x": np.array([3.0, 4.0]), "y": np.array([1.0, 0.0])}
    noisy = [{"out": ref["out"], "x": np.array([3.0, 4.05]), "y": np.array([1.0, 0.1])}]
    tol = agreement.tolerances(ref, "f32", noisy)  # noise: 0, 1% and 10% (norm-wise)
    assert tol == {"out": agreement.TOLERANCE["f32"],
                   "x": pytest.approx(agreement.SPREAD * 0.01), "y": None}
    got = {"out": ref["out"], "x": np.array([3.0, 4.5]), "y": np.array([-1.0, 0.0])}
    assert agreement.check("v", got, ref, tol) == pytest.approx(0.1)  # y: undecidable, skipped
    with pytest.raises(agreement.Disagreement, match="v: out differs"):
        agreement.check("v", dict(got, out=np.array([3.0, -4.01])), ref, tol)
    with pytest.raises(agreement.Disagreement, match="v: x differs"):
        agreement.check("v", dict(got, x=np.array([3.0, 6.0])), ref, tol)
    with pytest.raises(agreement.Disagreement, match="y missing"):
        agreement.check("v", {"out": ref["out"], "x": ref["x"]}, ref, tol)
