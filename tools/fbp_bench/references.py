"""What the FBP benchmark's rows are measured against: the two-GEMM floor at the kernel's shapes
by any library's `mm` (numpy, torch), the GEMM peak of a large square GEMM per library, the copy
bandwidth, and the host cost (page faults, CPU time) of one call."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tools import bench_common as bc
from tools.fbp_bench.inputs import Entry, rotating


def torch_sync(torch, device: str) -> Callable[[Any], None]:
    """What waits for torch's work on `device` ("cuda" or "cpu")."""
    return (lambda _: torch.cuda.synchronize()) if device == "cuda" else (lambda _: None)


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
