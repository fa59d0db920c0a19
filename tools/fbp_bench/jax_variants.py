"""The FBP benchmark's JAX variants: the XLA two-GEMM floor, `fbp` (with and without dropout), the
Pallas kernel (Triton and Mosaic GPU) and the naive unfactorized layer, each jitted, forward only
or forward+backward."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from avfbp_jax.ops import fbp as fbp_kernel
from tools import bench_common as bc
from tools.fbp_bench.inputs import Entry, kernel_args, rotating

DROPOUT = 0.1
PALLAS_RESIDUALS = ("recompute", "keep")


def loss_grad(f: Callable[..., jax.Array], nargs: int) -> Callable[..., Any]:
    """value_and_grad of sum(f(*args) * g) w.r.t. the first `nargs` args (g is the last arg, a
    float32 array or tuple of arrays shaped like the output).

    Returning the loss value keeps the forward pass alive (XLA would drop an unused forward).
    """

    def loss(*args):
        *inputs, g = args
        outs = jax.tree.leaves(f(*inputs))
        return sum(jnp.vdot(o.astype(jnp.float32), c) for o, c in
                   zip(outs, jax.tree.leaves(g), strict=True))

    return jax.value_and_grad(loss, argnums=tuple(range(nargs)))


def floor_fn(x, y, w_x, w_y):
    dot = lambda v, w: jnp.dot(v, w, preferred_element_type=jnp.float32)
    return dot(x, w_x), dot(y, w_y)


def naive_fn(x, y, w):
    """z_j = x^T W_j y with W (o, m, n)."""
    return jnp.einsum("bm,omn,bn->bo", x, w, y, preferred_element_type=jnp.float32)


def device_sets(sets: list[dict[str, np.ndarray]], dtype: str) -> list[dict[str, jax.Array]]:
    """The input copies on the default device: cotangents float32, the rest in `dtype`."""
    jdt = bc.DTYPES[dtype]
    return [{name: jax.device_put(a if name.startswith("g") else a.astype(jdt))
             for name, a in s.items()} for s in sets]


def jax_entry(name: str, mode: str, f: Callable[..., Any], nargs: int,
               arg_sets: list[list[Any]]) -> Entry:
    """A jitted variant: f itself for "fwd", value and gradient of sum(f * g) for "fwd+bwd"."""
    fn = jax.jit(f if mode == "fwd" else loss_grad(f, nargs))
    return name, mode, bc.Variant(f"{name}|{mode}", rotating(fn, arg_sets))


def xla_variants(sets: list[dict[str, jax.Array]], k: int, modes: Sequence[str],
                 impls: Sequence[str]) -> list[Entry]:
    """The XLA floor and `fbp` (with and without dropout) in the modes asked for."""
    plain = lambda x, y, wx, wy, bx, by: fbp_kernel(x, y, wx, wy, bx, by, k=k)
    drop = lambda x, y, wx, wy, bx, by, rng: fbp_kernel(
        x, y, wx, wy, bx, by, k=k, dropout_rate=DROPOUT, dropout_rng=rng)
    out = []
    for mode in modes:
        if "floor" in impls:
            bwd = mode == "fwd+bwd"
            args = [[s["x"], s["y"], s["w_x"], s["w_y"], *([(s["g_x"], s["g_y"])] if bwd else [])]
                    for s in sets]
            out.append(jax_entry("floor", mode, floor_fn, 4, args))
        if "xla" in impls:
            out.append(jax_entry("fbp", mode, plain, 6, kernel_args(sets, mode)))
            if mode == "fwd+bwd":
                out.append(jax_entry("fbp+dropout", mode, drop, 6,
                                      kernel_args(sets, mode, [jax.random.key(1)])))
    return out


def pallas_variants(sets: list[dict[str, jax.Array]], k: int, modes: Sequence[str]
                    ) -> list[Entry]:
    """avfbp_jax.ops.fbp_pallas: one forward, and fwd+bwd once per residual strategy."""
    fbp_pallas = importlib.import_module("avfbp_jax.ops.fbp_pallas").fbp_pallas
    out = []
    for mode in modes:
        for residuals in (PALLAS_RESIDUALS[:1] if mode == "fwd" else PALLAS_RESIDUALS):
            f = lambda x, y, wx, wy, bx, by, residuals=residuals: fbp_pallas(
                x, y, wx, wy, bx, by, k=k, residuals=residuals)
            name = "pallas" if mode == "fwd" else f"pallas:{residuals}"
            out.append(jax_entry(name, mode, f, 6, kernel_args(sets, mode)))
    return out


def mosaic_variants(sets: list[dict[str, jax.Array]], k: int, modes: Sequence[str], label: str,
                    notes: list[str]) -> list[Entry]:
    """avfbp_jax.ops.fbp_mosaic, forward and fwd+bwd, each run once before it is timed.

    Mosaic GPU is experimental (jax >= 0.11, Hopper GPUs): a variant that fails to compile or run
    is left out with a note, and the sweep goes on. The forward's largest difference from `fbp`
    (relative to fbp's largest output) is noted, as a check that the timed kernel is right.
    """
    fbp_mosaic = importlib.import_module("avfbp_jax.ops.fbp_mosaic").fbp_mosaic
    f = lambda x, y, wx, wy, bx, by: fbp_mosaic(x, y, wx, wy, bx, by, k=k)
    out = []
    for mode in modes:
        args = kernel_args(sets, mode)
        entry = jax_entry("mosaic", mode, f, 6, args)
        try:
            if mode == "fwd":
                got = np.asarray(jax.jit(f)(*args[0]), np.float32)
                want = np.asarray(fbp_kernel(*args[0], k=k), np.float32)
                diff = np.abs(got - want).max() / np.abs(want).max()
                notes.append(f"mosaic {label}: forward max |z - fbp z| = {diff:.1e} of max "
                             "|fbp z|")
            else:
                jax.block_until_ready(entry[2].call())
        except Exception as e:  # noqa: BLE001 - an experimental backend's failure is a result
            message = " ".join(str(e).split())[:500]
            notes.append(f"mosaic {label} {mode}: not timed, {type(e).__name__}: {message}")
            continue
        out.append(entry)
    return out
