"""Shared helpers for the benchmark scripts in tools/: interleaved timing, the same-run GEMM peak,
machine description, compile counting and printed tables (files are written through
avfbp_jax.atomic).

Timing model: every variant is a zero-argument callable plus a `sync` that waits for its result
(jax.block_until_ready, torch.cuda.synchronize). One sample runs the callable `reps` times
back to back and syncs once, so asynchronous dispatch overlaps as it does in a real loop; the
sample is divided by `reps`. Variants are timed in rounds (A B C, A B C, ...) so that load from
other processes on a shared machine hits all of them alike; reported numbers are the median and
the inter-quartile range over rounds.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from avfbp_jax.train.environment import cpu_model

DTYPES = {"f32": jnp.float32, "bf16": jnp.bfloat16}


@dataclasses.dataclass
class Variant:
    """One thing to time: `call()` does the work, `sync(result)` waits until it is done."""

    name: str
    call: Callable[[], Any]
    sync: Callable[[Any], Any] = jax.block_until_ready
    reps: int = 1


@dataclasses.dataclass
class Timing:
    """Seconds per call, one entry per round."""

    samples: list[float]
    reps: int

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p25(self) -> float:
        return float(np.percentile(self.samples, 25))

    @property
    def p75(self) -> float:
        return float(np.percentile(self.samples, 75))

    def as_dict(self) -> dict[str, Any]:
        return {"median_s": self.median, "p25_s": self.p25, "p75_s": self.p75,
                "iqr_rel": (self.p75 - self.p25) / self.median, "rounds": len(self.samples),
                "reps_per_sample": self.reps, "samples_s": self.samples}


def _sample(v: Variant) -> float:
    start = time.perf_counter()
    out = None
    for _ in range(v.reps):
        out = v.call()
    v.sync(out)
    return (time.perf_counter() - start) / v.reps


def time_interleaved(variants: Sequence[Variant], *, rounds: int, warmup: int = 2,
                     target_s: float = 0.05) -> dict[str, Timing]:
    """Times `variants` in alternating rounds after `warmup` untimed calls of each.

    Each variant's `reps` is set so that one sample takes about `target_s` (at least 1 call),
    which keeps timer resolution and dispatch jitter out of fast variants.
    """
    for v in variants:
        for _ in range(warmup):
            v.sync(v.call())
        once = _sample(dataclasses.replace(v, reps=1))
        v.reps = max(1, min(1000, math.ceil(target_s / max(once, 1e-7))))
    samples: dict[str, list[float]] = {v.name: [] for v in variants}
    for _ in range(rounds):
        for v in variants:
            samples[v.name].append(_sample(v))
    return {v.name: Timing(samples[v.name], v.reps) for v in variants}


def gemm_variant(dtype: Any, size: int, device: jax.Device | None = None
                 ) -> tuple[Variant, float]:
    """A jitted (size x size) @ (size x size) GEMM in `dtype` on one device, and its FLOPs.

    Same accumulation rule as the FBP kernel (float32 accumulation, preferred_element_type);
    2 * size^3 FLOPs per call (multiply and add counted separately). Timed in the same rounds
    as the variants it is compared with, so machine load hits it alike.
    """
    device = device or jax.devices()[0]
    key_a, key_b = jax.random.split(jax.random.key(0))
    a = jax.device_put(jax.random.normal(key_a, (size, size), dtype), device)
    b = jax.device_put(jax.random.normal(key_b, (size, size), dtype), device)
    f = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
    return Variant(f"gemm{size}|{jnp.dtype(dtype).name}", lambda: f(a, b)), 2.0 * size**3


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on (goes into every JSON and table header)."""
    devs = jax.devices()
    info = {
        "backend": jax.default_backend(),
        "devices": len(devs),
        "device_kind": devs[0].device_kind,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "loadavg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        info["torch"] = None
    return info


def describe_machine(info: dict[str, Any]) -> str:
    torch_v = info.get("torch") or "not installed"
    return (f"{info['backend']} x{info['devices']} ({info['device_kind']});"
            f" CPU {info['cpu_model']}, {info['cpu_count']} cores;"
            f" jax {info['jax']}, torch {torch_v};"
            f" load avg {info['loadavg_1m']:.2f}")


class CompileCounter:
    """Counts XLA backend compilations (jax.monitoring events) while `counting` is True."""

    EVENT = "/jax/core/compile/backend_compile_duration"

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0
        self.counting = False
        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, name: str, duration: float, **_: Any) -> None:
        if self.counting and name == self.EVENT:
            self.count += 1
            self.seconds += duration

    def reset(self) -> None:
        self.count, self.seconds = 0, 0.0


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
    """Plain-text table; columns are (key, header, format spec). Missing values print as '-'."""

    def cell(row: dict[str, Any], key: str, fmt: str) -> str:
        val = row.get(key)
        if val is None:
            return "-"
        return format(val, fmt) if fmt else str(val)

    body = [[cell(r, key, fmt) for key, _, fmt in columns] for r in rows]
    heads = [h for _, h, _ in columns]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
              for i, h in enumerate(heads)]
    line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))
    return "\n".join([line(heads), line(["-" * w for w in widths]), *map(line, body)])


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]
                   ) -> str:
    """The same table in Markdown."""
    cell = lambda r, key, fmt: "-" if r.get(key) is None else format(r[key], fmt)
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r, key, fmt) for key, _, fmt in columns) + " |"
              for r in rows]
    return "\n".join(lines)


def parse_ints(text: str) -> list[int]:
    """'8,32' -> [8, 32]."""
    return [int(t) for t in text.split(",") if t.strip()]
