"""Benchmark of the factorized bilinear pooling kernel (avfbp_jax.ops.fbp), design brief §6.

For each dims (m, n, k, o), dtype and batch size it times, interleaved in rounds on one device:

  floor          the two projection GEMMs alone (x W_x, y W_y; no bias), same precision and
                 float32 accumulation as the kernel: the cost FBP cannot go below
  fbp            avfbp_jax.ops.fbp, jitted (dropout off)
  fbp+dropout    the same with dropout 0.1 on the product (fwd+bwd only: training)
  naive          unfactorized bilinear z_j = x^T W_j y with an explicit W (o, m, n); only where
                 the estimated memory and time fit (--naive-max-gb, --naive-max-s)
  torch          a PyTorch twin of the kernel (same math, eager), when torch is importable
  torch.compile  the twin under torch.compile

each forward only ("fwd") and forward+backward ("fwd+bwd": value and gradient of the scalar
loss sum(out * g), g a fixed random cotangent, w.r.t. the inputs and all parameters).

FLOPs are counted explicitly, 2 per multiply-add:
  FBP, floor, twins: fwd 2 B (m + n) k o; fwd+bwd 3x that (each GEMM also has an input and a
      weight gradient of the same size). The elementwise work (bias, product, pool, sqrt, norm,
      under 0.5% of the GEMM FLOPs at m = n = 512) is not counted, so every factorized variant is
      credited the same work and GFLOP/s ratios equal time ratios.
  naive: fwd 2 B o n (m + 1); fwd+bwd 3x that.
The GEMM peak is a large square GEMM of the same dtype on the same device, timed in the same
rounds as each shape's variants; "%peak" is GFLOP/s over that shape's GEMM GFLOP/s.

  python3 tools/bench_fbp.py --out /tmp/bench_fbp.json [--plot /tmp/bench_fbp.png]
  python3 tools/bench_fbp.py --quick --out /tmp/q.json      # tiny sweep, seconds
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from typing import Any

import bench_common as bc
import jax
import jax.numpy as jnp
import numpy as np

from avfbp_jax.ops import fbp as fbp_kernel
from avfbp_jax.ops.fbp import NORM_FLOOR, SQRT_GRAD_FLOOR

DROPOUT = 0.1
FLOP_NOTE = __doc__.split("FLOPs are counted")[1].split("\n\n")[0].strip()
MODES = ("fwd", "fwd+bwd")
MFB_DIMS = (512, 512, 5, 1000)  # the original MFB size: the targets are stated here


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


def naive_cost(b: int, m: int, n: int, o: int, itemsize: int, mode: str) -> tuple[float, float]:
    """(FLOPs, estimated peak bytes) of the naive layer: W, its gradient, the (B, o, n) temps."""
    fwd = 2.0 * b * o * n * (m + 1)
    if mode == "fwd":
        return fwd, o * m * n * itemsize + b * o * n * 4
    return 3 * fwd, o * m * n * (itemsize + 4) + 3 * b * o * n * 4


# ----------------------------------------------------------------------------- PyTorch twin
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


def torch_variants(torch, arrays: dict[str, np.ndarray], k: int, dtype: str, compile_: bool,
                   device: str) -> list[tuple[str, str, Callable[[], Any], Callable[[Any], Any]]]:
    """(name, mode, call, sync) for the eager (and compiled) twin in both modes."""
    tdt = {"f32": torch.float32, "bf16": torch.bfloat16}[dtype]
    t = {name: torch.from_numpy(np.asarray(a, np.float32)).to(device) for name, a in arrays.items()}
    params = [t[name].to(tdt).requires_grad_(True) for name in ("x", "y", "w_x", "w_y", "b_x",
                                                                "b_y")]
    g = t["g"]
    sync = (lambda _: torch.cuda.synchronize()) if device == "cuda" else (lambda _: None)
    eager = torch_twin(torch)
    impls = [("torch", eager)]
    if compile_:
        torch.compiler.reset()  # fresh guards per shape: no silent fall-back to eager
        impls.append(("torch.compile", torch.compile(eager, dynamic=False)))
    out = []
    for name, f in impls:

        def fwd(f=f):
            with torch.no_grad():
                return f(*params, k)

        def fwd_bwd(f=f):
            for p in params:
                p.grad = None
            loss = (f(*params, k).float() * g).sum()
            loss.backward()
            return loss

        out += [(name, "fwd", fwd, sync), (name, "fwd+bwd", fwd_bwd, sync)]
    return out


def check_twin(torch, k: int) -> float:
    """Max |JAX - torch| of the kernel on a small random f32 case (the twin must agree)."""
    rng = np.random.default_rng(0)
    m, n, o, b = 24, 16, 7, 5
    arrs = [rng.standard_normal(s).astype(np.float32) * 0.3
            for s in [(b, m), (b, n), (m, k * o), (n, k * o), (k * o,), (k * o,)]]
    ref = np.asarray(fbp_kernel(*map(jnp.asarray, arrs), k=k))
    got = torch_twin(torch)(*map(torch.from_numpy, arrs), k).numpy()
    return float(np.max(np.abs(ref - got)))


# ----------------------------------------------------------------------------- one shape
def bench_shape(dims: tuple[int, int, int, int], dtype: str, b: int, args, torch_mod,
                torch_device: str | None, notes: list[str]) -> list[dict[str, Any]]:
    """Times every variant of one (dims, dtype, batch) with the GEMM peak, interleaved."""
    m, n, k, o = dims
    ko = k * o
    jdt = bc.DTYPES[dtype]
    rng = np.random.default_rng(b)
    arrays = {
        "x": rng.standard_normal((b, m), np.float32),
        "y": rng.standard_normal((b, n), np.float32),
        "w_x": rng.standard_normal((m, ko), np.float32) / math.sqrt(m),
        "w_y": rng.standard_normal((n, ko), np.float32) / math.sqrt(n),
        "b_x": rng.uniform(-1, 1, ko).astype(np.float32) / math.sqrt(m),
        "b_y": rng.uniform(-1, 1, ko).astype(np.float32) / math.sqrt(n),
        "g": rng.standard_normal((b, o), np.float32),
    }
    dev = jax.devices()[0]
    j = {name: jax.device_put(a.astype(jdt) if name != "g" else a, dev)
         for name, a in arrays.items()}
    g_floor = tuple(jax.device_put(rng.standard_normal((b, ko), np.float32), dev)
                    for _ in range(2))
    key = jax.random.key(1)
    fbp_plain = lambda x, y, wx, wy, bx, by: fbp_kernel(x, y, wx, wy, bx, by, k=k)
    fbp_drop = lambda x, y, wx, wy, bx, by, rng: fbp_kernel(
        x, y, wx, wy, bx, by, k=k, dropout_rate=DROPOUT, dropout_rng=rng)
    six = [j[s] for s in ("x", "y", "w_x", "w_y", "b_x", "b_y")]
    four = six[:4]

    f = {
        ("floor", "fwd"): (jax.jit(floor_fn), four),
        ("floor", "fwd+bwd"): (jax.jit(_loss_grad(floor_fn, 4)), [*four, g_floor]),
        ("fbp", "fwd"): (jax.jit(fbp_plain), six),
        ("fbp", "fwd+bwd"): (jax.jit(_loss_grad(fbp_plain, 6)), [*six, j["g"]]),
        ("fbp+dropout", "fwd+bwd"): (jax.jit(_loss_grad(fbp_drop, 6)), [*six, key, j["g"]]),
    }
    variants: list[tuple[str, str, bc.Variant]] = []
    for (name, mode), (fn, fargs) in f.items():
        if mode in args.modes:
            call = lambda fn=fn, a=fargs: fn(*a)
            variants.append((name, mode, bc.Variant(f"{name}|{mode}", call)))

    flops_fact = {"fwd": 2.0 * b * (m + n) * ko}
    flops_fact["fwd+bwd"] = 3 * flops_fact["fwd"]
    flops = {}
    if not args.no_naive:
        itemsize = jnp.dtype(jdt).itemsize
        w_naive = None
        for mode in args.modes:
            nflops, nbytes = naive_cost(b, m, n, o, itemsize, mode)
            est_s = nflops / (args.peak_seen[dtype] * 1e9)
            if nbytes > args.naive_max_gb * 2**30 or est_s > args.naive_max_s:
                notes.append(f"naive {m}x{n}x{k}x{o} {dtype} B={b} {mode}: skipped (needs"
                             f" ~{nbytes / 2**30:.1f} GiB, ~{est_s:.1f} s/call at GEMM peak;"
                             f" limits {args.naive_max_gb:.1f} GiB, {args.naive_max_s} s)")
                continue
            if w_naive is None:
                w_naive = (jax.random.normal(jax.random.key(2), (o, m, n), jnp.float32)
                           / math.sqrt(m * n)).astype(jdt)
            flops[("naive", mode)] = nflops
            if mode == "fwd":
                fn, fargs = jax.jit(naive_fn), [j["x"], j["y"], w_naive]
            else:
                fn, fargs = jax.jit(_loss_grad(naive_fn, 3)), [j["x"], j["y"], w_naive, j["g"]]
            variants.append(("naive", mode, bc.Variant(f"naive|{mode}",
                                                       lambda fn=fn, a=fargs: fn(*a))))
    if torch_mod is not None and torch_device is not None:
        for name, mode, call, sync in torch_variants(torch_mod, arrays, k, dtype,
                                                     not args.no_torch_compile, torch_device):
            if mode in args.modes:
                variants.append((name, mode, bc.Variant(f"{name}|{mode}", call, sync)))

    gemm, gemm_flops = args.gemm[dtype]
    timings = bc.time_interleaved([gemm, *(v for _, _, v in variants)], rounds=args.rounds,
                                  warmup=args.warmup, target_s=args.target_ms / 1e3)
    peak = gemm_flops / timings[gemm.name].median / 1e9
    args.peak_seen[dtype] = peak
    rows = []
    for name, mode, v in variants:
        t = timings[v.name]
        fl = flops.get((name, mode), flops_fact[mode])
        rows.append({"dims": f"{m}x{n}x{k}x{o}", "m": m, "n": n, "k": k, "o": o, "dtype": dtype,
                     "batch": b, "mode": mode, "variant": name, "flops": fl,
                     "ms": t.median * 1e3, "iqr_pct": 100 * (t.p75 - t.p25) / t.median,
                     "samples_per_s": b / t.median, "gflops_per_s": fl / t.median / 1e9,
                     "peak_gflops_per_s": peak, "pct_peak": 100 * fl / t.median / 1e9 / peak,
                     **t.as_dict()})
    for r in rows:
        floor = next((q for q in rows if q["variant"] == "floor" and q["mode"] == r["mode"]), None)
        r["x_floor"] = r["median_s"] / floor["median_s"] if floor else None
    return rows


# ----------------------------------------------------------------------------- driver
def parse_dims(text: str) -> list[tuple[int, int, int, int]]:
    out = []
    for item in text.split(","):
        parts = tuple(int(p) for p in item.split(":"))
        if len(parts) != 4:
            raise SystemExit(f"--dims: expected m:n:k:o items, got {item!r}")
        out.append(parts)
    return out


def targets(rows: list[dict[str, Any]], backend: str) -> list[dict[str, Any]]:
    """The issue's targets at the MFB size (512:512:5:1000), f32, largest batch, fwd+bwd."""
    dims = "x".join(map(str, MFB_DIMS))
    sel = [r for r in rows if r["dtype"] == "f32" and r["mode"] == "fwd+bwd" and r["dims"] == dims]
    if not sel:
        return []
    b = max(r["batch"] for r in sel)
    get = {r["variant"]: r for r in sel if r["batch"] == b}
    out = []
    if "fbp" in get and "floor" in get:
        ratio = get["fbp"]["median_s"] / get["floor"]["median_s"]
        out.append({"target": f"fbp fwd+bwd <= 1.25x floor ({dims}, f32, B={b}, {backend})",
                    "value": ratio, "met": ratio <= 1.25})
    if "fbp" in get and "torch" in get:
        ratio = get["fbp"]["median_s"] / get["torch"]["median_s"]
        out.append({"target": f"fbp fwd+bwd <= torch eager ({dims}, f32, B={b}, {backend})",
                    "value": ratio, "met": ratio <= 1.0})
    return out


COLUMNS = [("dims", "dims m x n x k x o", ""), ("dtype", "dtype", ""), ("mode", "mode", ""),
           ("batch", "batch", "d"), ("variant", "variant", ""), ("ms", "ms/call", ".3f"),
           ("iqr_pct", "IQR%", ".1f"), ("samples_per_s", "samples/s", ",.0f"),
           ("gflops_per_s", "GFLOP/s", ".1f"), ("pct_peak", "%peak", ".1f"),
           ("x_floor", "x floor", ".2f")]


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", default="64,256,1024,4096,8192")
    p.add_argument("--dims", default="512:512:5:1000,128:128:5:100",
                   help="comma-separated m:n:k:o cases (default: MFB size and a small case)")
    p.add_argument("--dtypes", default="f32,bf16")
    p.add_argument("--modes", default="fwd,fwd+bwd")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--target-ms", type=float, default=50.0, help="time per sample (reps/sample)")
    p.add_argument("--gemm-size", type=int, default=None,
                   help="side of the peak GEMM (default 2048 on CPU, 8192 on accelerators)")
    p.add_argument("--naive-max-gb", type=float, default=None,
                   help="memory limit for the naive layer (default: a quarter of free memory)")
    p.add_argument("--naive-max-s", type=float, default=1.0,
                   help="skip the naive layer where one call would take longer (at GEMM peak)")
    p.add_argument("--no-naive", action="store_true")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--no-torch-compile", action="store_true")
    p.add_argument("--quick", action="store_true",
                   help="tiny sweep (small dims, batches 8 and 32, 3 rounds) for smoke tests")
    p.add_argument("--out", required=True, help="JSON output path")
    p.add_argument("--plot", default=None, help="PNG output path (samples/s against batch)")
    if p.parse_known_args(argv)[0].quick:  # presets; flags given explicitly still win
        p.set_defaults(batches="8,32", dims="32:24:5:16", rounds=3, warmup=1, target_ms=5.0,
                       gemm_size=256)
    args = p.parse_args(argv)

    args.modes = [m for m in args.modes.split(",") if m]
    if set(args.modes) - set(MODES):
        raise SystemExit(f"--modes: choose from {MODES}")
    dtypes = [d for d in args.dtypes.split(",") if d]
    if set(dtypes) - set(bc.DTYPES):
        raise SystemExit(f"--dtypes: choose from {tuple(bc.DTYPES)}")
    backend = jax.default_backend()
    args.gemm_size = args.gemm_size or (2048 if backend == "cpu" else 8192)
    if args.naive_max_gb is None:
        args.naive_max_gb = _free_memory_gb() / 4

    notes: list[str] = []
    torch_mod, torch_device = None, None
    if not args.no_torch:
        try:
            import torch as torch_mod
        except ImportError:
            notes.append("torch not installed: no PyTorch twin")
        else:
            if backend == "cpu":
                torch_device = "cpu"
            elif backend == "gpu" and torch_mod.cuda.is_available():
                torch_device = "cuda"
            else:
                notes.append(f"torch has no device matching jax backend {backend!r}: no twin")
            if torch_device is not None:
                twin_err = check_twin(torch_mod, 5)
                notes.append(f"PyTorch twin agrees with avfbp_jax.ops.fbp: max |diff| "
                             f"{twin_err:.1e} (f32)")
                if twin_err > 1e-4:
                    raise SystemExit(f"PyTorch twin disagrees with the JAX kernel: {twin_err}")

    info = bc.machine_info()
    print(f"# bench_fbp on {bc.describe_machine(info)}", flush=True)
    args.gemm = {d: bc.gemm_variant(bc.DTYPES[d], args.gemm_size) for d in dtypes}
    args.peak_seen = {}  # latest GEMM GFLOP/s per dtype (the naive layer's time estimate)
    for d, (gemm, gemm_flops) in args.gemm.items():
        t = bc.time_interleaved([gemm], rounds=3)[gemm.name]
        args.peak_seen[d] = gemm_flops / t.median / 1e9
    rows: list[dict[str, Any]] = []
    for dims in parse_dims(args.dims):
        for dtype in dtypes:
            for b in bc.parse_ints(args.batches):
                rows += bench_shape(dims, dtype, b, args, torch_mod, torch_device, notes)
                print(f"  done {rows[-1]['dims']} {dtype} B={b}", flush=True)
    peak = {d: float(np.median([r["peak_gflops_per_s"] for r in rows if r["dtype"] == d]))
            for d in dtypes}

    print(bc.format_table(rows, COLUMNS))
    print()
    for d in dtypes:
        print(f"GEMM peak {d} ({args.gemm_size}^3, timed in every shape's rounds): median"
              f" {peak[d]:.1f} GFLOP/s")
    tgt = targets(rows, backend)
    for t in tgt:
        print(f"target {t['target']}: {t['value']:.3f} -> {'met' if t['met'] else 'MISSED'}")
    for note in notes:
        print(f"note: {note}")
    bc.write_json(args.out, {"benchmark": "fbp", "machine": info, "argv": sys.argv[1:],
                             "flop_counting": FLOP_NOTE,
                             "gemm_size": args.gemm_size, "gemm_peak_gflops_per_s": peak,
                             "rows": rows, "targets": tgt, "notes": notes})
    if args.plot:
        plot(rows, args.plot)
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
