"""Benchmark of the factorized bilinear pooling kernel (avfbp_jax.ops.fbp), design brief §6.

For each dims (m, n, k, o), dtype and batch size it times, interleaved in rounds on one device,
the variants of the implementations asked for (`impls`):

  floor          the two projection GEMMs alone (x W_x, y W_y; no bias) in XLA, same precision and
                 float32 accumulation as the kernel: the cost FBP cannot go below with XLA's GEMMs
  floor:torch    the same GEMMs in PyTorch (torch.mm into preallocated outputs), and
  floor:numpy    in numpy (CPU, f32): the machine's GEMM ceiling at the kernel's shapes
  fbp            avfbp_jax.ops.fbp, jitted (dropout off)                              impl "xla"
  fbp+dropout    the same with dropout 0.1 on the product (fwd+bwd only: training)    impl "xla"
  pallas         avfbp_jax.ops.fbp_pallas; fwd+bwd once per residual strategy
                 (pallas:recompute, pallas:keep). Not timed on CPU, where Pallas only runs in
                 interpret mode (not a speed), unless forced
  torch          a PyTorch twin of the kernel (same math, eager), on CUDA when torch sees a GPU
  torch.compile  the twin under torch.compile                                         impl "torch"
  naive          unfactorized bilinear z_j = x^T W_j y with an explicit W (o, m, n); only where
                 the estimated memory and time fit (naive_max_gb, naive_max_s)

each forward only ("fwd") and forward+backward ("fwd+bwd": value and gradient of the scalar
loss sum(out * g), g a fixed random cotangent, w.r.t. the inputs and all parameters; the GEMM
floors run their 2 or 6 GEMMs). Inputs are random normal; where one shape's inputs fit in 64 MiB
(a cache could hold them) the calls rotate over enough copies to exceed 128 MiB.

FLOPs are counted explicitly, 2 per multiply-add:
  FBP, floors, twins: fwd 2 B (m + n) k o; fwd+bwd 3x that (each GEMM also has an input and a
      weight gradient of the same size). The elementwise work (bias, product, pool, sqrt, norm,
      under 0.5% of the GEMM FLOPs at m = n = 512) is not counted, so every factorized variant is
      credited the same work and FLOP/s ratios equal time ratios.
  naive: fwd 2 B o n (m + 1); fwd+bwd 3x that.

Bytes are the least any implementation must move: every input, weight and bias read once in the
compute dtype, the output written once; fwd+bwd adds reading the cotangent and writing every
gradient once. The GEMM floors also write their (B, k o) float32 products (fwd) or read their
float32 cotangents (fwd+bwd): that is their definition.

Every row has its physical floor beside it: max(FLOPs / GEMM peak, bytes / memory bandwidth), with
the GEMM peak the fastest GEMM of that dtype in the same rounds (a large square GEMM in XLA, torch
or numpy, or one of the floors at the kernel's shapes) and the bandwidth a large device-to-device
copy (jax on accelerators, numpy on CPU), all timed in the same rounds as that shape's variants so
that machine load hits them alike. One more call of each variant counts its minor page faults and
host CPU time (all threads), which load from other processes barely changes.

  python3 tools/bench_fbp.py --out /tmp/bench_fbp.json [--plot /tmp/bench_fbp.png]
  python3 tools/bench_fbp.py --quick --out /tmp/q.json      # tiny sweep, seconds
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import bench_common as bc
import jax
import jax.numpy as jnp
import numpy as np

from avfbp_jax.ops import fbp as fbp_kernel
from avfbp_jax.ops.fbp import NORM_FLOOR, SQRT_GRAD_FLOOR

DROPOUT = 0.1
FLOP_NOTE = __doc__.split("FLOPs are counted")[1].split("\n\n")[0].strip()
BYTE_NOTE = __doc__.split("Bytes are the least")[1].split("\n\n")[0].strip()
MODES = ("fwd", "fwd+bwd")
IMPLS = ("floor", "xla", "pallas", "torch", "naive")
MFB_DIMS = (512, 512, 5, 1000)  # the original MFB size: the targets are stated here
CACHE_BYTES = 64 * 2**20  # inputs smaller than this are rotated over copies (see `copies_for`)
PALLAS_RESIDUALS = ("recompute", "keep")
KERNEL_ARGS = ("x", "y", "w_x", "w_y", "b_x", "b_y")  # fbp's positional arrays, in order

Dims = tuple[int, int, int, int]
Entry = tuple[str, str, bc.Variant]  # (variant name, mode, timed callable)


# ----------------------------------------------------------------------------- counts
def kernel_flops(b: int, m: int, n: int, k: int, o: int, mode: str) -> float:
    """GEMM FLOPs of the factorized kernel (and of the floors and twins), see the docstring."""
    fwd = 2.0 * b * (m + n) * k * o
    return fwd if mode == "fwd" else 3 * fwd


def naive_cost(b: int, m: int, n: int, o: int, itemsize: int, mode: str) -> tuple[float, float]:
    """(FLOPs, estimated peak bytes) of the naive layer: W, its gradient, the (B, o, n) temps."""
    fwd = 2.0 * b * o * n * (m + 1)
    if mode == "fwd":
        return fwd, o * m * n * itemsize + b * o * n * 4
    return 3 * fwd, o * m * n * (itemsize + 4) + 3 * b * o * n * 4


def min_bytes(variant: str, mode: str, b: int, m: int, n: int, k: int, o: int,
              itemsize: int) -> float:
    """Least bytes a variant must move (see the docstring)."""
    ko = k * o
    if variant.startswith("floor"):
        reads = b * (m + n) * itemsize + (m + n) * ko * itemsize
        if mode == "fwd":
            return reads + 2 * b * ko * 4
        return 2 * reads + 2 * b * ko * 4  # read the cotangents, write every gradient once
    if variant == "naive":
        inputs = b * (m + n) * itemsize + o * m * n * itemsize
    else:
        inputs = b * (m + n) * itemsize + (m + n) * ko * itemsize + 2 * ko * 4
    if mode == "fwd":
        return inputs + b * o * itemsize
    return 2 * inputs + b * o * itemsize + b * o * 4


# ----------------------------------------------------------------------------- inputs
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


# ----------------------------------------------------------------------------- JAX variants
def _loss_grad(f: Callable[..., jax.Array], nargs: int) -> Callable[..., Any]:
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


def _device_sets(sets: list[dict[str, np.ndarray]], dtype: str) -> list[dict[str, jax.Array]]:
    """The input copies on the default device: cotangents float32, the rest in `dtype`."""
    jdt = bc.DTYPES[dtype]
    return [{name: jax.device_put(a if name.startswith("g") else a.astype(jdt))
             for name, a in s.items()} for s in sets]


def _jax_entry(name: str, mode: str, f: Callable[..., Any], nargs: int,
               arg_sets: list[list[Any]]) -> Entry:
    """A jitted variant: f itself for "fwd", value and gradient of sum(f * g) for "fwd+bwd"."""
    fn = jax.jit(f if mode == "fwd" else _loss_grad(f, nargs))
    return name, mode, bc.Variant(f"{name}|{mode}", rotating(fn, arg_sets))


def _kernel_args(sets: list[dict[str, Any]], mode: str, extra: Sequence[Any] = ()
                 ) -> list[list[Any]]:
    """Per input copy: the kernel's six arrays, `extra`, and for fwd+bwd the cotangent g."""
    return [[*(s[a] for a in KERNEL_ARGS), *extra, *([s["g"]] if mode == "fwd+bwd" else [])]
            for s in sets]


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
            out.append(_jax_entry("floor", mode, floor_fn, 4, args))
        if "xla" in impls:
            out.append(_jax_entry("fbp", mode, plain, 6, _kernel_args(sets, mode)))
            if mode == "fwd+bwd":
                out.append(_jax_entry("fbp+dropout", mode, drop, 6,
                                      _kernel_args(sets, mode, [jax.random.key(1)])))
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
            out.append(_jax_entry(name, mode, f, 6, _kernel_args(sets, mode)))
    return out


# ----------------------------------------------------------------------------- PyTorch
def torch_twin(torch):
    """Returns the PyTorch twin of avfbp_jax.ops.fbp (dropout off): same math, same floors."""

    class SignedSqrt(torch.autograd.Function):
        @staticmethod
        def forward(ctx, z):
            ctx.save_for_backward(z)
            return torch.sign(z) * torch.sqrt(torch.abs(z))

        @staticmethod
        def backward(ctx, g):
            (z,) = ctx.saved_tensors
            return g * 0.5 * torch.rsqrt(torch.clamp(torch.abs(z), min=SQRT_GRAD_FLOOR))

    def fbp(x, y, w_x, w_y, b_x, b_y, k: int):
        p = (x @ w_x + b_x).float() * (y @ w_y + b_y).float()
        z = p.reshape(p.shape[0], -1, k).sum(-1)
        z = SignedSqrt.apply(z)
        sq = (z * z).sum(-1, keepdim=True)
        z = z * torch.rsqrt(torch.clamp(sq, min=NORM_FLOOR * NORM_FLOOR))
        return z.to(x.dtype)

    return fbp


def torch_sync(torch, device: str) -> Callable[[Any], None]:
    return (lambda _: torch.cuda.synchronize()) if device == "cuda" else (lambda _: None)


def torch_variants(torch, sets: list[dict[str, np.ndarray]], k: int, dtype: str,
                   modes: Sequence[str], impls: Sequence[str], compile_: bool,
                   device: str) -> list[Entry]:
    """The twin eager (and compiled) when "torch" is asked for, and torch's GEMM floor."""
    tdt = {"f32": torch.float32, "bf16": torch.bfloat16}[dtype]
    sync = torch_sync(torch, device)
    # The twin's cotangent stays float32 like the kernel's; the floors' are GEMM operands.
    tsets = [{name: torch.from_numpy(a).to(device=device, dtype=torch.float32 if name == "g"
                                          else tdt)
              for name, a in s.items()} for s in sets]
    out = []
    if "floor" in impls:
        out += gemm_floor("torch", torch.mm, lambda shape: torch.empty(shape, device=device,
                                                                       dtype=tdt),
                          tsets, modes, sync)
    if "torch" not in impls:
        return out
    params = [[t[name].clone().requires_grad_(True) for name in KERNEL_ARGS] for t in tsets]
    eager = torch_twin(torch)
    twins = [("torch", eager)]
    if compile_:
        torch.compiler.reset()  # fresh guards per shape: no silent fall-back to eager
        twins.append(("torch.compile", torch.compile(eager, dynamic=False)))
    for name, f in twins:

        def fwd(p, t, f=f):
            with torch.no_grad():
                return f(*p, k)

        def fwd_bwd(p, t, f=f):
            for q in p:
                q.grad = None
            loss = (f(*p, k).float() * t["g"]).sum()
            loss.backward()
            return loss

        for mode in modes:
            call = rotating(fwd if mode == "fwd" else fwd_bwd,
                            list(zip(params, tsets, strict=True)))
            out.append((name, mode, bc.Variant(f"{name}|{mode}", call, sync)))
    return out


def gemm_floor(lib: str, mm: Callable[..., Any], empty: Callable[[tuple[int, int]], Any],
               sets: list[dict[str, Any]], modes: Sequence[str], sync: Callable[[Any], Any]
               ) -> list[Entry]:
    """The floor's GEMMs (2 fwd, 6 fwd+bwd) by a library's `mm(a, b, out=c)` into outputs made
    once by `empty(shape)`: the floor times the GEMMs, not the allocator."""
    b, ko = sets[0]["g_x"].shape
    m, n = sets[0]["x"].shape[1], sets[0]["y"].shape[1]
    p = [empty((b, ko)) for _ in range(2)]
    d = [empty((b, m)), empty((b, n))]
    w = [empty((m, ko)), empty((n, ko))]

    def floor(s, bwd):
        for i, (v, wv, g) in enumerate(((s["x"], s["w_x"], s["g_x"]),
                                        (s["y"], s["w_y"], s["g_y"]))):
            mm(v, wv, out=p[i])
            if bwd:
                mm(g, wv.T, out=d[i])
                mm(v.T, g, out=w[i])

    return [(f"floor:{lib}", mode, bc.Variant(
        f"floor:{lib}|{mode}", rotating(lambda s, bwd=mode == "fwd+bwd": floor(s, bwd),
                                        [[s] for s in sets]), sync))
            for mode in modes]


def check_twin(torch, k: int) -> float:
    """Max |JAX - torch| of the kernel on a small random f32 case (the twin must agree)."""
    rng = np.random.default_rng(0)
    m, n, o, b = 24, 16, 7, 5
    arrs = [rng.standard_normal(s).astype(np.float32) * 0.3
            for s in [(b, m), (b, n), (m, k * o), (n, k * o), (k * o,), (k * o,)]]
    ref = np.asarray(fbp_kernel(*map(jnp.asarray, arrs), k=k))
    got = torch_twin(torch)(*map(torch.from_numpy, arrs), k).numpy()
    return float(np.max(np.abs(ref - got)))


# ----------------------------------------------------------------------------- references
def reference_variants(dtype: str, gemm_size: int, torch, torch_device: str | None
                       ) -> list[tuple[str, bc.Variant, float]]:
    """(library, variant, FLOPs) of a square GEMM per library present for this dtype."""
    out = [("xla", *bc.gemm_variant(bc.DTYPES[dtype], gemm_size))]
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((gemm_size, gemm_size), np.float32) for _ in range(2))
    flops = 2.0 * gemm_size**3
    if dtype == "f32" and jax.default_backend() == "cpu":
        c = np.empty_like(a)
        out.append(("numpy", bc.Variant(f"gemm{gemm_size}|numpy", lambda: np.matmul(a, b, out=c),
                                        lambda _: None), flops))
    if torch is not None and torch_device is not None:
        tdt = {"f32": torch.float32, "bf16": torch.bfloat16}[dtype]
        ta, tb = (torch.from_numpy(v).to(device=torch_device, dtype=tdt) for v in (a, b))
        tc = torch.empty_like(ta)
        out.append(("torch", bc.Variant(f"gemm{gemm_size}|torch|{dtype}",
                                        lambda: torch.mm(ta, tb, out=tc),
                                        torch_sync(torch, torch_device)), flops))
    return out


def bandwidth_variant() -> tuple[bc.Variant, float]:
    """A large copy (read + write): jax on accelerators, numpy into a reused buffer on CPU."""
    if jax.default_backend() == "cpu":
        src = np.random.default_rng(0).standard_normal(2**26, np.float32)  # 256 MiB
        dst = np.empty_like(src)
        return bc.Variant("copy|numpy", lambda: np.copyto(dst, src), lambda _: None), 2 * src.nbytes
    src = jax.random.normal(jax.random.key(0), (2**28,), jnp.float32)  # 1 GiB
    f = jax.jit(lambda a: a + 1.0)
    return bc.Variant("copy|device", lambda: f(src)), 2 * src.nbytes


def host_cost(v: bc.Variant) -> tuple[int, float]:
    """(minor page faults, host CPU seconds of all threads) of one more call of v.

    Load from other processes barely changes either, so they back the timed ratios on a shared
    machine: XLA:CPU takes fresh pages for a call's temporaries and each first touch faults.
    """
    faults, cpu = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.process_time()
    v.sync(v.call())
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults,
            time.process_time() - cpu)


# ----------------------------------------------------------------------------- one shape
def bench_shape(dims: Dims, dtype: str, b: int, *, modes: Sequence[str], impls: Sequence[str],
                rounds: int, warmup: int, target_s: float, gemm_size: int, torch,
                torch_device: str | None, torch_compile: bool, run_pallas: bool,
                naive_max_gb: float, naive_max_s: float, peak_seen: dict[str, float],
                notes: list[str]) -> list[dict[str, Any]]:
    """Times every variant of one (dims, dtype, batch) with the references, interleaved."""
    m, n, k, o = dims
    itemsize = jnp.dtype(bc.DTYPES[dtype]).itemsize
    label = f"{m}x{n}x{k}x{o} {dtype} B={b}"
    base = make_inputs(b, dims, seed=b)
    copies = copies_for(base, itemsize)
    if copies > 1:
        notes.append(f"{label}: inputs fit in {CACHE_BYTES // 2**20} MiB, calls rotate over"
                     f" {copies} copies")
    sets = [base] + [{name: a.copy() for name, a in base.items()} for _ in range(copies - 1)]
    jsets = _device_sets(sets, dtype)
    entries = xla_variants(jsets, k, modes, impls)
    if "pallas" in impls and run_pallas:
        entries += pallas_variants(jsets, k, modes)
    if "floor" in impls and dtype == "f32" and jax.default_backend() == "cpu":
        entries += gemm_floor("numpy", np.matmul, lambda shape: np.empty(shape, np.float32),
                              sets, modes, lambda _: None)
    if torch is not None and torch_device is not None:
        entries += torch_variants(torch, sets, k, dtype, modes, impls, torch_compile,
                                  torch_device)
    flops = {}
    if "naive" in impls:
        w_naive = None
        for mode in modes:
            nflops, nbytes = naive_cost(b, m, n, o, itemsize, mode)
            est_s = nflops / (peak_seen[dtype] * 1e9)
            if nbytes > naive_max_gb * 2**30 or est_s > naive_max_s:
                notes.append(f"naive {label} {mode}: skipped (needs ~{nbytes / 2**30:.1f} GiB,"
                             f" ~{est_s:.1f} s/call at GEMM peak; limits {naive_max_gb:.1f} GiB,"
                             f" {naive_max_s} s)")
                continue
            if w_naive is None:
                w_naive = (jax.random.normal(jax.random.key(2), (o, m, n), jnp.float32)
                           / math.sqrt(m * n)).astype(bc.DTYPES[dtype])
            flops[("naive", mode)] = nflops
            args = [[s["x"], s["y"], w_naive] + ([s["g"]] if mode == "fwd+bwd" else [])
                    for s in jsets]
            entries.append(_jax_entry("naive", mode, naive_fn, 3, args))

    refs = reference_variants(dtype, gemm_size, torch, torch_device)
    copy, copy_bytes = bandwidth_variant()
    timed = [v for _, v, _ in refs] + [copy] + [v for _, _, v in entries]
    timings = bc.time_interleaved(timed, rounds=rounds, warmup=warmup, target_s=target_s)
    peaks = {lib: fl / timings[v.name].median / 1e9 for lib, v, fl in refs}
    peak_seen[dtype] = peaks["xla"]
    # The fastest GEMM seen in these rounds: a square one, or a floor at the kernel's shapes.
    machine_peak = max([*peaks.values(), *(kernel_flops(b, m, n, k, o, mode)
                                            / timings[v.name].median / 1e9
                                            for name, mode, v in entries
                                            if name.startswith("floor"))])
    bandwidth = copy_bytes / timings[copy.name].median / 1e9
    rows = []
    for name, mode, v in entries:
        t = timings[v.name]
        faults, cpu_s = host_cost(v)
        fl = flops.get((name, mode), kernel_flops(b, m, n, k, o, mode))
        nbytes = min_bytes(name, mode, b, m, n, k, o, itemsize)
        compute_ms, memory_ms = 1e3 * fl / (machine_peak * 1e9), 1e3 * nbytes / (bandwidth * 1e9)
        rows.append({"dims": f"{m}x{n}x{k}x{o}", "m": m, "n": n, "k": k, "o": o, "dtype": dtype,
                     "batch": b, "mode": mode, "variant": name, "flops": fl, "bytes": nbytes,
                     "ms": t.median * 1e3, "iqr_pct": 100 * (t.p75 - t.p25) / t.median,
                     "samples_per_s": b / t.median, "gflops_per_s": fl / t.median / 1e9,
                     "peak_gflops_per_s": peaks["xla"], "gemm_peaks_gflops_per_s": peaks,
                     "machine_peak_gflops_per_s": machine_peak,
                     "pct_peak": 100 * fl / t.median / 1e9 / peaks["xla"],
                     "pct_machine_peak": 100 * fl / t.median / 1e9 / machine_peak,
                     "bandwidth_gb_per_s": bandwidth, "compute_floor_ms": compute_ms,
                     "memory_floor_ms": memory_ms,
                     "x_physical": t.median * 1e3 / max(compute_ms, memory_ms),
                     "input_copies": copies, "minor_faults_per_call": faults,
                     "host_cpu_ms_per_call": cpu_s * 1e3, **t.as_dict()})
    for r in rows:
        floor = next((q for q in rows if q["variant"] == "floor" and q["mode"] == r["mode"]), None)
        r["x_floor"] = r["median_s"] / floor["median_s"] if floor else None
    return rows


# ----------------------------------------------------------------------------- targets
def _ratio_target(text: str, num: dict | None, den: dict | None, limit: float, *,
                  at_least: bool = False, goal: bool = False) -> list[dict[str, Any]]:
    if num is None or den is None:
        return []
    value = num["median_s"] / den["median_s"]
    met = value >= limit if at_least else value <= limit
    return [{"target": text, "value": value, "met": met, "goal": goal}]


def targets(rows: list[dict[str, Any]], backend: str) -> list[dict[str, Any]]:
    """The issue's targets at the MFB size (512:512:5:1000), largest batch, from the rows.

    CPU (f32, fwd+bwd): fbp <= 1.25x the XLA floor and <= torch eager; goal: <= torch.compile.
    Pallas (f32 and bf16, B >= 8192): fwd <= 1.05x floor, fwd+bwd <= 1.15x (each residual
    strategy), and torch.compile at least 1.5x slower than it in both modes.
    """
    dims = "x".join(map(str, MFB_DIMS))
    out = []
    for dtype in ("f32", "bf16"):
        sel = [r for r in rows if r["dtype"] == dtype and r["dims"] == dims]
        if not sel:
            continue
        b = max(r["batch"] for r in sel)
        get = {(r["variant"], r["mode"]): r for r in sel if r["batch"] == b}
        at = f"({dims}, {dtype}, B={b}, {backend})"
        if backend == "cpu" and dtype == "f32":
            fbp, mode = get.get(("fbp", "fwd+bwd")), "fwd+bwd"
            out += _ratio_target(f"fbp fwd+bwd <= 1.25x floor {at}", fbp,
                                 get.get(("floor", mode)), 1.25)
            out += _ratio_target(f"fbp fwd+bwd <= torch eager {at}", fbp,
                                 get.get(("torch", mode)), 1.0)
            out += _ratio_target(f"goal: fbp fwd+bwd <= torch.compile {at}", fbp,
                                 get.get(("torch.compile", mode)), 1.0, goal=True)
        if backend == "cpu" or b < 8192:
            continue
        for name, mode, limit in [("pallas", "fwd", 1.05), ("pallas:recompute", "fwd+bwd", 1.15),
                                  ("pallas:keep", "fwd+bwd", 1.15)]:
            pallas = get.get((name, mode))
            out += _ratio_target(f"{name} {mode} <= {limit}x floor {at}", pallas,
                                 get.get(("floor", mode)), limit)
            out += _ratio_target(f"{name} {mode} >= 1.5x faster than torch.compile {at}",
                                 get.get(("torch.compile", mode)), pallas, 1.5, at_least=True)
    return out


# ----------------------------------------------------------------------------- driver
def torch_device_for(backend: str, notes: list[str]):
    """(torch module, device) for the twin on the device JAX uses, or (None, None) with a note."""
    try:
        import torch
    except ImportError:
        notes.append("torch not installed: no PyTorch twin")
        return None, None
    if backend == "cpu":
        device = "cpu"
    elif backend == "gpu" and torch.cuda.is_available():
        device = "cuda"
    else:
        notes.append(f"torch has no device matching jax backend {backend!r}: no twin")
        return None, None
    twin_err = check_twin(torch, 5)
    notes.append(f"PyTorch twin agrees with avfbp_jax.ops.fbp: max |diff| {twin_err:.1e} (f32)")
    if twin_err > 1e-4:
        raise SystemExit(f"PyTorch twin disagrees with the JAX kernel: {twin_err}")
    if device == "cuda":
        notes.append(f"f32 GEMM precision: torch {torch.get_float32_matmul_precision()!r}"
                     f" ('highest' = no TF32), jax_default_matmul_precision"
                     f" {jax.config.jax_default_matmul_precision!r} (None = XLA's default,"
                     f" which may use TF32 for f32 on this GPU)")
    return torch, device


def run_benchmark(dims: Sequence[Dims], batches: Sequence[int], dtypes: Sequence[str],
                  modes: Sequence[str], impls: Sequence[str], *, rounds: int = 7,
                  warmup: int = 2, target_ms: float = 50.0, gemm_size: int | None = None,
                  torch_compile: bool = True, force_pallas: bool = False,
                  naive_max_gb: float | None = None, naive_max_s: float = 1.0,
                  log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Runs the sweep and returns the JSON-able result: rows, machine, GEMM peaks, targets, notes.

    impls: subset of IMPLS ("floor" also times torch's and numpy's GEMMs where present).
    force_pallas: time Pallas on CPU too (interpret mode: a correctness run, not a speed).
    """
    for name, got, allowed in [("modes", modes, MODES), ("dtypes", dtypes, tuple(bc.DTYPES)),
                               ("impls", impls, IMPLS)]:
        if not got or set(got) - set(allowed):
            raise ValueError(f"{name}: choose from {allowed}, got {list(got)}")
    backend = jax.default_backend()
    gemm_size = gemm_size or (2048 if backend == "cpu" else 8192)
    if naive_max_gb is None:
        naive_max_gb = _free_memory_gb() / 4
    notes: list[str] = []
    torch, torch_device = None, None
    if "torch" in impls or "floor" in impls:
        torch, torch_device = torch_device_for(backend, notes)
    run_pallas = "pallas" in impls and (backend != "cpu" or force_pallas)
    if "pallas" in impls and not run_pallas:
        notes.append("pallas: not timed on CPU (interpret mode is not a speed measurement;"
                     " force_pallas / --force-pallas runs it anyway)")
    if run_pallas:
        try:
            importlib.import_module("avfbp_jax.ops.fbp_pallas")
        except ImportError as e:
            notes.append(f"pallas: avfbp_jax.ops.fbp_pallas not importable ({e}): not timed")
            run_pallas = False

    info = bc.machine_info()
    # Settings that change CPU speed without changing numbers (the allocator: see the README).
    info["env"] = {v: os.environ.get(v) for v in ("XLA_FLAGS", "LD_PRELOAD", "GLIBC_TUNABLES",
                                                   "OMP_NUM_THREADS")}
    log(f"# bench_fbp on {bc.describe_machine(info)}")
    peak_seen = {}  # latest XLA GEMM GFLOP/s per dtype (the naive layer's time estimate)
    for d in dtypes:
        gemm, gemm_flops = bc.gemm_variant(bc.DTYPES[d], gemm_size)
        peak_seen[d] = gemm_flops / bc.time_interleaved([gemm], rounds=3)[gemm.name].median / 1e9
    rows: list[dict[str, Any]] = []
    for dim in dims:
        for dtype in dtypes:
            for b in batches:
                rows += bench_shape(dim, dtype, b, modes=modes, impls=impls, rounds=rounds,
                                    warmup=warmup, target_s=target_ms / 1e3, gemm_size=gemm_size,
                                    torch=torch, torch_device=torch_device,
                                    torch_compile=torch_compile, run_pallas=run_pallas,
                                    naive_max_gb=naive_max_gb, naive_max_s=naive_max_s,
                                    peak_seen=peak_seen, notes=notes)
                log(f"  done {rows[-1]['dims']} {dtype} B={b}")
    median = lambda key, d: float(np.median([r[key] for r in rows if r["dtype"] == d]))
    libs = sorted({lib for r in rows for lib in r["gemm_peaks_gflops_per_s"]})
    info["loadavg_1m_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"benchmark": "fbp", "machine": info, "flop_counting": FLOP_NOTE,
            "byte_counting": BYTE_NOTE, "gemm_size": gemm_size,
            "gemm_peak_gflops_per_s": {d: median("peak_gflops_per_s", d) for d in dtypes},
            "gemm_peaks_by_library_gflops_per_s": {
                d: {lib: float(np.median([r["gemm_peaks_gflops_per_s"][lib] for r in rows
                                          if r["dtype"] == d
                                          and lib in r["gemm_peaks_gflops_per_s"]]))
                    for lib in libs if any(lib in r["gemm_peaks_gflops_per_s"] for r in rows
                                           if r["dtype"] == d)}
                for d in dtypes},
            "bandwidth_gb_per_s": float(np.median([r["bandwidth_gb_per_s"] for r in rows])),
            "rows": rows, "targets": targets(rows, backend), "notes": notes}


def columns(backend: str) -> list[tuple[str, str, str]]:
    flops = ("gflops_per_s", "GFLOP/s", ".1f") if backend == "cpu" else ("tflops_per_s",
                                                                         "TFLOP/s", ".1f")
    return [("dims", "dims m x n x k x o", ""), ("dtype", "dtype", ""), ("mode", "mode", ""),
            ("batch", "batch", "d"), ("variant", "variant", ""), ("ms", "ms/call", ".3f"),
            ("iqr_pct", "IQR%", ".1f"), ("samples_per_s", "samples/s", ",.0f"), flops,
            ("pct_machine_peak", "%peak", ".1f"), ("x_floor", "x floor", ".2f"),
            ("compute_floor_ms", "FLOP floor ms", ".3f"), ("memory_floor_ms", "byte floor ms",
                                                           ".3f"),
            ("x_physical", "x phys", ".2f"), ("minor_faults_per_call", "faults", "d"),
            ("host_cpu_ms_per_call", "host CPU ms", ".0f")]


def report(result: dict[str, Any], markdown: bool = False) -> str:
    """The result as a table (plain text or Markdown), the reference speeds, targets and notes."""
    backend = result["machine"]["backend"]
    cols = columns(backend)
    rows = [dict(r, tflops_per_s=r["gflops_per_s"] / 1e3) for r in result["rows"]]
    if markdown:
        cell = lambda r, key, fmt: "-" if r.get(key) is None else format(r[key], fmt)
        lines = ["| " + " | ".join(h for _, h, _ in cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(cell(r, key, fmt) for key, _, fmt in cols) + " |"
                  for r in rows]
        table = "\n".join(lines)
    else:
        table = bc.format_table(rows, cols)
    out = [table, ""]
    for d, libs in result["gemm_peaks_by_library_gflops_per_s"].items():
        peaks = ", ".join(f"{lib} {v:.1f}" for lib, v in libs.items())
        out.append(f"GEMM peak {d} ({result['gemm_size']}^3, timed in every shape's rounds,"
                   f" GFLOP/s): {peaks}")
    out.append(f"copy bandwidth (read + write, timed in every shape's rounds):"
               f" {result['bandwidth_gb_per_s']:.1f} GB/s")
    for t in result["targets"]:
        verdict = "met" if t["met"] else "MISSED"
        out.append(f"target {t['target']}: {t['value']:.3f} -> {verdict}")
    out += [f"note: {note}" for note in result["notes"]]
    return "\n".join(out)


def plot(rows: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["dims"], r["dtype"], r["mode"]) for r in rows})
    colors = {name: f"C{i}" for i, name in enumerate(dict.fromkeys(r["variant"] for r in rows))}
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (dims, dtype, mode) in zip(axes[0], panels, strict=True):
        sel = [r for r in rows if (r["dims"], r["dtype"], r["mode"]) == (dims, dtype, mode)]
        for name in dict.fromkeys(r["variant"] for r in sel):
            pts = sorted((r["batch"], r["samples_per_s"]) for r in sel if r["variant"] == name)
            ax.plot(*zip(*pts, strict=True), marker="o", label=name, color=colors[name])
        ax.set(xscale="log", yscale="log", xlabel="batch", ylabel="samples/s",
               title=f"{dims} {dtype} {mode}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    bc.save_figure(fig, path)
    plt.close(fig)


def parse_dims(text: str) -> list[Dims]:
    out = []
    for item in text.split(","):
        parts = tuple(int(p) for p in item.split(":"))
        if len(parts) != 4:
            raise SystemExit(f"--dims: expected m:n:k:o items, got {item!r}")
        out.append(parts)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", default="64,256,1024,4096,8192")
    p.add_argument("--dims", default="512:512:5:1000,128:128:5:100",
                   help="comma-separated m:n:k:o cases (default: MFB size and a small case)")
    p.add_argument("--dtypes", default="f32,bf16")
    p.add_argument("--modes", default="fwd,fwd+bwd")
    p.add_argument("--impls", default=",".join(IMPLS), help=f"subset of {','.join(IMPLS)}")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--target-ms", type=float, default=50.0, help="time per sample (reps/sample)")
    p.add_argument("--gemm-size", type=int, default=None,
                   help="side of the peak GEMM (default 2048 on CPU, 8192 on accelerators)")
    p.add_argument("--naive-max-gb", type=float, default=None,
                   help="memory limit for the naive layer (default: a quarter of free memory)")
    p.add_argument("--naive-max-s", type=float, default=1.0,
                   help="skip the naive layer where one call would take longer (at GEMM peak)")
    p.add_argument("--no-naive", action="store_true", help="same as leaving naive out of --impls")
    p.add_argument("--no-torch", action="store_true", help="same as leaving torch out of --impls")
    p.add_argument("--no-torch-compile", action="store_true")
    p.add_argument("--force-pallas", action="store_true",
                   help="time the Pallas kernel on CPU too (interpret mode: not a speed)")
    p.add_argument("--quick", action="store_true",
                   help="tiny sweep (small dims, batches 8 and 32, 3 rounds) for smoke tests")
    p.add_argument("--out", required=True, help="JSON output path")
    p.add_argument("--plot", default=None, help="PNG output path (samples/s against batch)")
    if p.parse_known_args(argv)[0].quick:  # presets; flags given explicitly still win
        p.set_defaults(batches="8,32", dims="32:24:5:16", rounds=3, warmup=1, target_ms=5.0,
                       gemm_size=256)
    args = p.parse_args(argv)
    impls = [i for i in args.impls.split(",") if i
             and not (args.no_naive and i == "naive") and not (args.no_torch and i == "torch")]
    try:
        result = run_benchmark(
            parse_dims(args.dims), bc.parse_ints(args.batches),
            [d for d in args.dtypes.split(",") if d], [m for m in args.modes.split(",") if m],
            impls, rounds=args.rounds, warmup=args.warmup, target_ms=args.target_ms,
            gemm_size=args.gemm_size, torch_compile=not args.no_torch_compile,
            force_pallas=args.force_pallas, naive_max_gb=args.naive_max_gb,
            naive_max_s=args.naive_max_s, log=lambda s: print(s, flush=True))
    except ValueError as e:
        raise SystemExit(f"--{e}") from None
    result["argv"] = sys.argv[1:] if argv is None else list(argv)
    print(report(result))
    bc.write_json(args.out, result)
    if args.plot:
        plot(result["rows"], args.plot)
    return 0


def _free_memory_gb() -> float:
    dev = jax.devices()[0]
    stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
    if stats and "bytes_limit" in stats:
        return (stats["bytes_limit"] - stats.get("bytes_in_use", 0)) / 2**30
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    except (ValueError, OSError):
        return 4.0


if __name__ == "__main__":
    sys.exit(main())
