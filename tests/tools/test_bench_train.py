"""Smoke tests of the train-step benchmark (python3 -m tools.bench_train, tools/train_bench/): a
tiny --quick run writes valid JSON and the train step does not recompile after warm-up; the
loader section measures the loader in memory and memory-mapped against the step. No timing is
asserted.
"""

import json

import jax
import pytest

from tools import bench_train


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


@pytest.mark.slow
def test_bench_train_loader_section_builds_a_cache_and_measures_both_modes(tmp_path):
    out = tmp_path / "loader.json"
    argv = ["--quick", "--sections", "loader", "--devices", "1", "--build-cache", "16",
            "--workers", "1", "--loader-seconds", "0.2", "--out", str(out)]
    assert bench_train.main(argv) == 0
    res = json.loads(out.read_text())
    loader = res["loader"]
    assert loader["clips"] == 16 and loader["cache_bytes"] > 0
    rows = loader["rows"]
    assert [(r["in_memory"], r["batch_size"]) for r in rows] == [(True, 8), (False, 8)]
    for r in rows:
        assert r["warm_samples_per_s"] > 0 and r["cold_batches_per_s"] > 0
        assert 0 < r["padding_efficiency"] <= 1
        assert r["bytes_per_sample"] == pytest.approx(sum(r["bytes_per_sample_by_key"].values()))
        assert r["dtypes"]["audio"] == "int16"
    assert loader["loader_samples_per_s"] == rows[0]["warm_samples_per_s"]
    assert loader["loader_over_step"] == pytest.approx(
        loader["loader_samples_per_s"] / loader["step_samples_per_s"])
    assert loader["loop_samples_per_s"] > 0
    # the loader's batches run through the warmed-up step without a compile
    assert res["compiles"] == {"warmup_shapes": 2, "compiles_after_warmup": 0,
                               "steps_after_warmup": 4}


def test_bench_train_twin_section_times_ours_and_the_twin(tmp_path):
    """--quick, the eager twin only (the compiled twin's step is tested in
    tests/tools/test_torch_twin_model.py and run by the device suite's dry run)."""
    pytest.importorskip("torch")
    out = tmp_path / "twin.json"
    argv = ["--quick", "--sections", "twin", "--devices", "1", "--dtypes", "f32,bf16",
            "--twin-compile", "none", "--out", str(out)]
    assert bench_train.main(argv) == 0
    rows = json.loads(out.read_text())["twin"]
    assert [(r["dtype"], r["impl"]) for r in rows] == [
        (d, impl) for d in ("f32", "bf16") for impl in ("jax", "torch")]
    for r in rows:
        jax_row = next(j for j in rows if j["dtype"] == r["dtype"] and j["impl"] == "jax")
        assert r["width"] == 0.03 and r["batch"] == 8 and r["samples_per_s"] > 0
        assert r["over_jax"] == pytest.approx(r["median_s"] / jax_row["median_s"])
        assert ((r["compile_s"] or 0) > 0) == (r["impl"] == "jax")
        assert (r["first_call_s"] is None) == (r["impl"] == "jax")
    # the logits check, once per width (on the first case): the twin is still a twin
    assert all(r["twin_logits_rel_err"] <= 1e-4 for r in rows[:2])
    assert all(r["twin_logits_rel_err"] is None for r in rows[2:])
