"""The device suite (python3 -m tools.device_suite, tools/device/): its dry run (every section at
tiny sizes on the CPU, in a subprocess as on the GPU machine), the largest-batch search against a
known memory model, and the JUnit reader.

No speed is asserted; the dry run must produce every section's numbers and the tables.
"""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from tools import REPO
from tools.device import gpu_tests
from tools.device.driver import Section
from tools.device.plan import SECTIONS, Plan
from tools.device.train_step import StepRunner
from tools.fusion_bench.sweep import FAMILY


def _positive(x) -> bool:
    return isinstance(x, int | float) and x > 0


@pytest.mark.slow
def test_dry_run_produces_every_section(tmp_path):
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    proc = subprocess.run(
        [sys.executable, "-m", "tools.device_suite", "--dry-run", "--out", str(out), "--commit",
         "abc1234"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(os.listdir(out)) == ["suite.json", "suite.log", "suite.md"]
    res = json.loads((out / "suite.json").read_text())
    s = res["sections"]
    assert set(s) == set(SECTIONS)
    for name, part in s.items():
        assert part["status"] == "ok" and not part.get("errors"), (name, part)
        assert 0 < part["wall_s"] <= part["budget_s"] + Section.GRACE_S, name
    assert res["commit"] == "abc1234" and res["dry_run"] is True
    assert res["install"]["status"].startswith("skipped")

    assert s["setup"]["devices"] and s["setup"]["versions"]["jax"]
    assert all(v == "ok" for v in s["setup"]["imports_ok"].values()), s["setup"]["imports_ok"]
    # gpu tests exist and skip on the CPU (the command line's -m gpu replaced setup.cfg's)
    assert s["pytest"]["returncode"] == 0 and s["pytest"]["counts"]["skipped"] >= 2
    assert any("test_gpu_step_equals_cpu_step" in t for t in s["pytest"]["tests"])

    plan = Plan.dry()
    fbp = s["fbp"]["result"]["rows"]
    assert {(r["variant"], r["mode"]) for r in fbp} >= {("floor", "fwd"), ("fbp", "fwd+bwd")}
    assert all(_positive(r["median_s"]) for r in fbp)
    fusion = s["fusion"]["result"]
    assert {(r["member"], r["mode"]) for r in fusion["rows"]} == {
        (name, mode) for name in FAMILY for mode in ("fwd", "fwd+bwd")}
    assert all(_positive(r["ms"]) and _positive(r["floor_ms"]) and "ours" in
               r["error_vs_twin"] for r in fusion["rows"])
    assert not fusion["errors"] and not fusion["skipped"]

    train = s["train"]
    assert set(train["gemm_peak_tflops"]) == set(plan.dtypes)
    for r in train["rows"]:
        assert r["fits"], r
        for key in ("compile_s", "samples_per_s", "tflops_per_s", "pct_peak", "device_bytes",
                    "gflop_per_sample", "lowered_gflop_per_sample"):
            assert _positive(r[key]), (key, r)
        assert r["samples_per_s"] * r["ms"] / 1e3 == pytest.approx(r["batch"])
    assert {(r["fusion"], r["batch"]) for r in train["rows"]} == \
        {("amfbp", b) for b in plan.fit_batches}
    largest = train["max_batch"]["amfbp bf16"]
    assert largest["found"] == plan.max_batch_cap and largest["capped"]
    assert _positive(largest["bytes_per_sample"]) and largest["fit_batches"] == [8, 16]

    twin = s["twin"]
    assert [(r["width"], r["dtype"], r["impl"]) for r in twin["rows"]] == [
        (w, d, impl) for w in plan.twin_widths for d in plan.dtypes
        for impl in ("jax", "torch", "torch.compile")]
    assert all(_positive(r["samples_per_s"]) and _positive(r["over_jax"]) for r in twin["rows"])
    assert twin["rows"][0]["twin_logits_rel_err"] <= 1e-4 and not twin["skipped"]

    assert s["corpus"]["clips"] == plan.clips and _positive(s["corpus"]["prepare_clips_per_s"])
    rows = s["host"]["rows"]
    assert [r["in_memory"] for r in rows] == [True, False]  # read into memory, memory-mapped
    host = rows[0]
    assert all(_positive(r["warm_samples_per_s"]) for r in rows)
    assert host["threads"] == plan.loader_threads
    # bytes per sample: the batch's arrays, one 1 s clip at 16 kHz (int16) and 10 64 x 64 crops
    by_key = host["bytes_per_sample_by_key"]
    assert host["dtypes"]["audio"] == "int16"
    assert by_key["audio"] == 16000 * 2 and by_key["frames"] == 10 * 64 * 64
    assert host["bytes_per_sample"] == pytest.approx(sum(by_key.values()))
    assert _positive(s["host"]["h2d"]["gb_per_s"])

    e2e = s["e2e"]
    assert e2e["steps"] == plan.e2e_steps and _positive(e2e["samples_per_s"])
    assert e2e["padding_fraction"] == 0.0 and e2e["train_clips"] == 8
    summary = res["summary"]
    assert _positive(summary["loader_vs_step"]["loader_over_step"])
    assert _positive(summary["e2e_vs_step"]["e2e_over_step"])

    md = (out / "suite.md").read_text()
    assert "commit abc1234" in md and "| amfbp | xla | bf16 | 16 |" in md
    assert "Fusion family" in md and "| lmf | fwd+bwd | f32 | 8 |" in md
    assert "| 0.03 | bf16 | torch.compile |" in md
    assert proc.stdout.rstrip().endswith(md.rstrip().splitlines()[-1])  # tables printed last


class _FakeRunner(StepRunner):
    """The search's arithmetic against a known memory model: bytes = 1000 + 100 * batch, limit
    10_000, and any batch above 80 raises out of memory when run (as fragmentation would)."""

    def __init__(self):
        plan = dataclasses.replace(Plan.dry(), batch_multiple=8, max_batch_cap=1000,
                                   step_batch=8)
        part = {"rows": [], "max_batch": {}, "skipped": []}
        part = type("P", (dict,), {"save": lambda self: None})(part)
        super().__init__(plan, part, mesh=None, limit=10_000, peaks={})
        self.tried = []

    def case(self, fusion, dtype, batch, purpose="", fbp_impl="xla"):
        self.tried.append(batch)
        row = {"fusion": fusion, "dtype": dtype, "batch": batch, "fbp_impl": fbp_impl,
               "device_bytes": 1000 + 100 * batch}
        row["fits"] = row["device_bytes"] <= 10_000 and batch <= 80
        if row["fits"]:
            row["samples_per_s"] = 10.0 * batch
        self.part["rows"].append(row)
        return row


def test_largest_batch_search_follows_the_memory_line():
    r = _FakeRunner()
    r.largest("amfbp", "bf16")  # no rows yet: measures step_batch and 4x it first
    info = r.part["max_batch"]["amfbp bf16"]
    assert info["fit_batches"] == [8, 32]
    assert info["bytes_per_sample"] == pytest.approx(100) and info["fixed_bytes"] == 1000
    assert info["predicted"] == 90  # (10_000 - 1000) / 100
    # 88 (90 down to a multiple of 8) runs out of memory; 10% less, down to a multiple of 8: 72
    assert r.tried == [8, 32, 88, 72]
    assert [t["fits"] for t in info["tries"]] == [False, True]
    assert info["found"] == 72 and info["samples_per_s"] == 720.0


def test_junit_outcomes(tmp_path):
    xml = tmp_path / "j.xml"
    xml.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.a" name="t_pass" time="1.5"/>'
        '<testcase classname="tests.a" name="t_fail" time="0.1">'
        '<failure message="assert 1 == 2">trace</failure></testcase>'
        '<testcase classname="tests.b" name="t_skip" time="0">'
        '<skipped message="no GPU"/></testcase>'
        '</testsuite></testsuites>')
    got = gpu_tests.junit_outcomes(str(xml))
    assert got["counts"] == {"passed": 1, "failed": 1, "error": 0, "skipped": 1}
    assert got["tests"]["tests.a::t_fail"] == {"outcome": "failed", "seconds": 0.1,
                                               "message": "assert 1 == 2"}
    assert got["tests"]["tests.a::t_pass"]["seconds"] == 1.5
    assert gpu_tests.junit_outcomes(str(tmp_path / "missing.xml")).keys() == {"junit_error"}
