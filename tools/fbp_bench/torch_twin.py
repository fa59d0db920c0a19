"""The PyTorch side of the FBP benchmark: the twin of avfbp_jax.ops.fbp (tools.torch_twins.fbp)
eager and under torch.compile, torch's GEMM floor, and the check that the twin computes what the
kernel does. torch is imported where it is needed (it is optional)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from avfbp_jax.ops import fbp as fbp_kernel
from tools import bench_common as bc
from tools.fbp_bench.inputs import KERNEL_ARGS, Entry, rotating
from tools.fbp_bench.references import gemm_floor, torch_sync


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
    from tools.torch_twins.fbp import fbp as eager

    params = [[t[name].clone().requires_grad_(True) for name in KERNEL_ARGS] for t in tsets]
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


def check_twin(torch, k: int) -> float:
    """Max |JAX - torch| of the kernel on a small random f32 case (the twin must agree)."""
    rng = np.random.default_rng(0)
    m, n, o, b = 24, 16, 7, 5
    arrs = [rng.standard_normal(s).astype(np.float32) * 0.3
            for s in [(b, m), (b, n), (m, k * o), (n, k * o), (k * o,), (k * o,)]]
    from tools.torch_twins.fbp import fbp

    ref = np.asarray(fbp_kernel(*map(jnp.asarray, arrs), k=k))
    got = fbp(*map(torch.from_numpy, arrs), k).numpy()
    return float(np.max(np.abs(ref - got)))


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
