"""Throughput reporting: XLA's FLOP count against the formula, the meter's arithmetic, peaks."""

import glob

import jax
import jax.numpy as jnp
import pytest

from avfbp_jax.train import perf


def test_compiled_flops_of_a_matmul_is_2mnk():
    compiled = jax.jit(jnp.matmul).lower(jnp.ones((64, 32)), jnp.ones((32, 16))).compile()
    assert perf.compiled_flops(compiled) == 2 * 64 * 32 * 16


def test_meter_rates_exclude_compile_and_restart_time(monkeypatch):
    # perf_counter calls: __init__, window() and its restart, restart(), window() and its restart.
    clock = iter([0.0, 10.0, 10.0, 12.0, 20.0, 20.0])
    monkeypatch.setattr(perf.time, "perf_counter", lambda: next(clock))
    meter = perf.ThroughputMeter(global_batch=32, peak=2.0, peak_source="test")
    for _ in range(4):
        meter.add(1e12)
    meter.exclude(2.0)  # compiling inside the window: 10 s - 2 s = 8 s of training
    window = meter.window()  # 4 steps in 8 s
    assert window == pytest.approx({"samples_per_s": 16.0, "steps_per_s": 0.5,
                                    "tflops_per_device": 0.5, "utilization": 0.25})
    meter.restart()  # at 12: the 2 s since the window (evaluation) do not count
    meter.add(3e12)
    assert meter.window()["steps_per_s"] == pytest.approx(1 / 8)  # one step from 12 to 20
    summary = meter.summary(compile_s=2.0)
    assert summary["measured_steps"] == 5 and summary["step_tflop"] == pytest.approx(7 / 5)
    assert summary["samples_per_s"] == pytest.approx(5 * 32 / 16)
    assert summary["utilization"] == pytest.approx(7 / 16 / 2.0)
    assert "samples/s" in perf.describe(summary)


def test_peak_from_table_override_or_measured_gemm():
    class Device:
        device_kind, platform = "NVIDIA H200", "gpu"

    assert perf.peak_tflops(Device(), "bfloat16") == (989.0, "datasheet (NVIDIA H200)")
    assert perf.peak_tflops(Device(), "float32", override=7.0) == (7.0, "train.peak_tflops")
    peak, source = perf.peak_tflops(jax.devices()[0], "float32")
    assert peak > 0 and source == "measured float32 GEMM on cpu"


def test_step_trace_writes_a_trace_and_refuses_bad_ranges(tmp_path):
    with pytest.raises(ValueError, match="train.profile_steps"):
        perf.StepTrace((3, 2), str(tmp_path))
    trace = perf.StepTrace((2, 3), str(tmp_path / "profile"))
    x = jnp.ones(4)
    for step in range(1, 5):
        trace.before(step)
        x = jax.jit(lambda v: v * 2)(x)
        trace.after(step, x)
    assert not trace.active
    assert glob.glob(str(tmp_path / "profile" / "**" / "*.xplane.pb"), recursive=True)
