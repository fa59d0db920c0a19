"""Performance of a training run: samples/s, steps/s, model TFLOP/s per device, utilisation
(MFU), and profiler traces of chosen steps.

Model FLOPs come from XLA's cost analysis of the compiled train step. The step is compiled per
device (SPMD), so its count is one device's share: forward, backward and optimizer update of
that device's rows, collectives excluded. Utilisation is that rate over the device's dense peak
for the compute dtype: from PEAK_TFLOPS for known accelerators, else from a GEMM timed at
start-up (MaxText reports MFU the same way).
"""

import logging
import os
import time

import jax
import jax.numpy as jnp

logger = logging.getLogger(__name__)

# Dense matrix-unit peak TFLOP/s per device, by the start of jax's device_kind, from the vendors'
# datasheets (SXM parts, no sparsity). float32 entries are what XLA's DEFAULT matmul precision
# runs at: TF32 tensor cores on NVIDIA Ampere and newer, bf16 passes on TPU.
PEAK_TFLOPS = {
    "NVIDIA H200": {"bfloat16": 989.0, "float32": 494.0},
    "NVIDIA H100": {"bfloat16": 989.0, "float32": 494.0},
    "NVIDIA A100": {"bfloat16": 312.0, "float32": 156.0},
    "TPU v4": {"bfloat16": 275.0, "float32": 275.0},
    "TPU v5 lite": {"bfloat16": 197.0, "float32": 197.0},
    "TPU v5": {"bfloat16": 459.0, "float32": 459.0},
    "TPU v6 lite": {"bfloat16": 918.0, "float32": 918.0},
}


def compiled_flops(compiled) -> float:
    """FLOPs of one call of a compiled jax function, per device (XLA's cost analysis).

    jax returns a dict, or a list with one dict per computation in older versions.
    """
    cost = compiled.cost_analysis()
    if isinstance(cost, list | tuple):
        return float(sum(c.get("flops", 0.0) for c in cost if c))
    return float((cost or {}).get("flops", 0.0))


def measure_gemm_tflops(dtype: str, size: int = 1024, repeats: int = 5) -> float:
    """The best TFLOP/s of a size^3 matrix product on the default device."""
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.dtype(dtype))
    b = jax.random.normal(jax.random.key(1), (size, size), jnp.dtype(dtype))
    matmul = jax.jit(jnp.matmul)
    matmul(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best / 1e12


def peak_tflops(device: jax.Device, dtype: str, override: float = 0.0) -> tuple[float, str]:
    """(peak TFLOP/s per device, where it comes from) for the compute dtype."""
    if override > 0:
        return override, "train.peak_tflops"
    for kind, peaks in PEAK_TFLOPS.items():
        if device.device_kind.startswith(kind):
            return peaks[jnp.dtype(dtype).name], f"datasheet ({kind})"
    return measure_gemm_tflops(dtype), f"measured {jnp.dtype(dtype).name} GEMM on {device.platform}"


class ThroughputMeter:
    """Rates over windows of train steps, and over the whole run.

    The loop calls `add(step_flops)` per step, `exclude(seconds)` for time inside the window that
    is not training (compilation), `window()` after the host has synchronised with the last step
    (it returns the window's rates and opens the next window), and `restart()` after work that
    must not count (evaluation, checkpoint saves). Data loading waits count: they are part of
    what a run achieves.
    """

    def __init__(self, global_batch: int, peak: float, peak_source: str):
        self.global_batch, self.peak, self.peak_source = global_batch, peak, peak_source
        self.total = {"steps": 0, "seconds": 0.0, "flops": 0.0}
        self.restart()

    def restart(self) -> None:
        self._start = time.perf_counter()
        self._steps, self._flops, self._excluded = 0, 0.0, 0.0

    def add(self, flops: float) -> None:
        self._steps += 1
        self._flops += flops

    def exclude(self, seconds: float) -> None:
        self._excluded += seconds

    def window(self) -> dict[str, float]:
        """This window's rates (empty if it ran no step); opens the next window."""
        seconds = time.perf_counter() - self._start - self._excluded
        steps, flops = self._steps, self._flops
        self.restart()
        if not steps or seconds <= 0:
            return {}
        for key, value in (("steps", steps), ("seconds", seconds), ("flops", flops)):
            self.total[key] += value
        return self._rates(steps, seconds, flops)

    def _rates(self, steps: int, seconds: float, flops: float) -> dict[str, float]:
        tflops = flops / seconds / 1e12
        return {"samples_per_s": steps * self.global_batch / seconds,
                "steps_per_s": steps / seconds,
                "tflops_per_device": tflops,
                "utilization": tflops / self.peak}

    def summary(self, compile_s: float) -> dict:
        """Whole-run figures for metrics.json (null rates if no window was measured)."""
        steps, seconds, flops = (self.total[k] for k in ("steps", "seconds", "flops"))
        rates = self._rates(steps, seconds, flops) if steps else {}
        return {
            "samples_per_s": rates.get("samples_per_s"),
            "steps_per_s": rates.get("steps_per_s"),
            "step_tflop": flops / steps / 1e12 if steps else None,
            "tflops_per_s_per_device": rates.get("tflops_per_device"),
            "peak_tflops_per_device": self.peak,
            "peak_source": self.peak_source,
            "utilization": rates.get("utilization"),
            "compile_s": compile_s,
            "measured_steps": steps,
            "global_batch": self.global_batch,
        }


class StepTrace:
    """A jax.profiler trace of train steps first..last (inclusive) into `directory`.

    `before(step)` is called before running step `step` (1-based, as logged), `after(step, state)`
    after it; the trace stops once the last step's results are ready. Steps already done (a
    resumed run) are not traced.
    """

    def __init__(self, steps: tuple[int, ...], directory: str):
        if steps and (len(steps) != 2 or not 1 <= steps[0] <= steps[1]):
            raise ValueError(f"train.profile_steps={steps}: expected (first, last) steps, "
                             "1 <= first <= last, or () for no trace")
        self.steps, self.directory, self.active = tuple(steps), directory, False

    def before(self, step: int) -> None:
        if self.steps and step == self.steps[0]:
            jax.profiler.start_trace(self.directory)
            self.active = True

    def after(self, step: int, state) -> None:
        if self.active and step == self.steps[1]:
            jax.block_until_ready(state)
            jax.profiler.stop_trace()
            self.active = False
            logger.info("wrote a profiler trace of steps %d-%d to %s", self.steps[0], step,
                        os.path.abspath(self.directory))


def describe(summary: dict) -> str:
    """One line for the terminal from ThroughputMeter.summary()."""
    if not summary["measured_steps"]:
        return "throughput: no step was measured"
    return (f"throughput: {summary['samples_per_s']:.1f} samples/s, "
            f"{summary['steps_per_s']:.2f} steps/s, "
            f"{summary['tflops_per_s_per_device']:.3g} TFLOP/s per device "
            f"({100 * summary['utilization']:.1f}% of {summary['peak_tflops_per_device']:.3g}, "
            f"{summary['peak_source']}); compiling took {summary['compile_s']:.1f} s")
