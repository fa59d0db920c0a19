"""The FBP benchmark's inputs: random arrays of one shape, the copies the calls rotate over so that
no cache holds them all, and the argument lists the kernel variants take."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tools import bench_common as bc
from tools.fbp_bench.counts import Dims

CACHE_BYTES = 64 * 2**20  # inputs smaller than this are rotated over copies (see `copies_for`)
KERNEL_ARGS = ("x", "y", "w_x", "w_y", "b_x", "b_y")  # fbp's positional arrays, in order

Entry = tuple[str, str, bc.Variant]  # (variant name, mode, timed callable)


def make_inputs(b: int, dims: Dims, seed: int) -> dict[str, np.ndarray]:
    """Random float32 inputs, weights (fan-in scaled), biases and cotangents of one shape."""
    m, n, k, o = dims
    ko = k * o
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((b, m), np.float32),
        "y": rng.standard_normal((b, n), np.float32),
        "w_x": rng.standard_normal((m, ko), np.float32) / math.sqrt(m),
        "w_y": rng.standard_normal((n, ko), np.float32) / math.sqrt(n),
        "b_x": rng.uniform(-1, 1, ko).astype(np.float32) / math.sqrt(m),
        "b_y": rng.uniform(-1, 1, ko).astype(np.float32) / math.sqrt(n),
        "g": rng.standard_normal((b, o), np.float32),
        "g_x": rng.standard_normal((b, ko), np.float32),  # the floors' cotangents
        "g_y": rng.standard_normal((b, ko), np.float32),
    }


def copies_for(arrays: dict[str, np.ndarray], itemsize: int) -> int:
    """How many copies of the inputs the calls rotate over so that no cache holds them all."""
    total = sum(a.size for a in arrays.values()) * itemsize
    return 1 if total >= CACHE_BYTES else min(16, math.ceil(2 * CACHE_BYTES / total))


def rotating(fn: Callable[..., Any], arg_sets: Sequence[Sequence[Any]]) -> Callable[[], Any]:
    """A zero-argument call of fn that uses the next argument set each time."""
    state = {"i": 0}

    def call():
        state["i"] = (state["i"] + 1) % len(arg_sets)
        return fn(*arg_sets[state["i"]])

    return call


def kernel_args(sets: list[dict[str, Any]], mode: str, extra: Sequence[Any] = ()
                ) -> list[list[Any]]:
    """Per input copy: the kernel's six arrays, `extra`, and for fwd+bwd the cotangent g."""
    return [[*(s[a] for a in KERNEL_ARGS), *extra, *([s["g"]] if mode == "fwd+bwd" else [])]
            for s in sets]
