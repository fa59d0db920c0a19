"""One member of the fusion benchmark at one (dtype, batch): our module, its floor and its PyTorch
twin (eager, torch.compile), each forward and forward+backward, checked against the twin's
float64 result (tools/fusion_bench/agreement.py), then timed in the same interleaved rounds as
the GEMM peaks and the copy bandwidth; one row per mode."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from avfbp_jax.models.fusion import fusion_op
from tools import bench_common as bc
from tools.fbp_bench.inputs import copies_for, rotating
from tools.fbp_bench.jax_variants import loss_grad
from tools.fbp_bench.references import torch_sync
from tools.fbp_bench.sweep import free_memory_gb
from tools.fusion_bench import agreement
from tools.fusion_bench.members import MEMBERS, FFTConv, settings

MODES = ("fwd", "fwd+bwd")
CHECK_ROWS = 64  # the check compares the first rows' outputs and those rows' gradients


def out_of_memory(e: BaseException) -> bool:
    """Whether e is an allocation failure (XLA, torch CUDA or torch CPU)."""
    text = str(e)
    return any(s in text for s in ("RESOURCE_EXHAUSTED", "out of memory",
                                   "can't allocate memory"))


class MemberBench:
    """Builds the variants of one member at one (dtype, batch) and checks them."""

    def __init__(self, cfg: ml_collections.ConfigDict, name: str, m: int, n: int, dtype: str,
                 b: int, modes: Sequence[str], notes: list[str]):
        self.name, self.m, self.n, self.dtype, self.b = name, m, n, dtype, b
        self.modes, self.notes = modes, notes
        self.label = f"{name} {dtype} B={b}"
        self.settings = settings(cfg, name)
        self.jdt = bc.DTYPES[dtype]
        self.itemsize = jnp.dtype(self.jdt).itemsize
        self.module = fusion_op(cfg, name, self.jdt, name)
        self.entries: list[tuple[str, str, bc.Variant]] = []
        self.twin, self.reference = None, None
        self.timed_twin = True  # False where the twin does not run in this dtype
        self.unchecked: list[str] = []  # arrays rounding noise leaves undecidable
        self.errors: dict[str, float] = {}

    def fits(self) -> bool:
        """Whether 8 float32 copies of the parameters fit in 80% of free memory (ours and its
        gradients, the float64 reference twin's parameters and gradients, the check's host
        copies; on an accelerator 6, the host copies aside); notes why not."""
        x, y = jnp.zeros((self.b, self.m), self.jdt), jnp.zeros((self.b, self.n), self.jdt)
        shapes = jax.eval_shape(self.module.init, jax.random.key(0), x, y)["params"]
        self.param_count = sum(math.prod(s.shape) for s in jax.tree.leaves(shapes))
        copies = 8 if jax.default_backend() == "cpu" else 6
        need, free = copies * 4 * self.param_count, free_memory_gb() * 2**30
        if need > 0.8 * free:
            self.notes.append(f"{self.label}: skipped ({self.param_count:,} parameters, ~"
                              f"{need / 2**30:.1f} GiB with gradients and copies; free "
                              f"{free / 2**30:.1f} GiB)")
            return False
        return True

    def build_inputs(self) -> None:
        """Parameters, and the per-call inputs x, y and cotangent g in enough copies that no
        cache holds them all (the weights, read every call as in a model, are one copy)."""
        b, m, n = self.b, self.m, self.n
        x, y = jnp.zeros((b, m), self.jdt), jnp.zeros((b, n), self.jdt)
        self.params = jax.jit(self.module.init)(jax.random.key(0), x, y)["params"]
        self.out_shape = jax.eval_shape(self.module.apply, {"params": self.params}, x, y).shape
        rng = np.random.default_rng(b)
        base = {"x": rng.standard_normal((b, m), np.float32),
                "y": rng.standard_normal((b, n), np.float32),
                "g": rng.standard_normal(self.out_shape, np.float32)}
        self.copies = copies_for(base, self.itemsize)
        self.sets = [base] + [{k: rng.standard_normal(a.shape, np.float32)
                               for k, a in base.items()} for _ in range(self.copies - 1)]
        # The twins see the inputs rounded to the compute dtype, as our module does.
        for s in self.sets:
            for k in ("x", "y"):
                s[k] = s[k].astype(self.jdt).astype(np.float32)
        # The check's inputs: the first copy with g zero past the first `rows` rows, so that the
        # timed (full-batch) programs return those rows' parameter gradients, which the
        # references compute on those rows alone (every member is a function of each row).
        self.rows = min(b, CHECK_ROWS)
        self.check_set = dict(base, g=np.where(np.arange(b)[:, None] < self.rows, base["g"], 0))
        self.check_rows = {k: a[:self.rows] for k, a in base.items()}

    # Our module.

    def ours(self) -> None:
        """The module jitted, checked against the reference when there is one."""
        apply = lambda p, x, y: self.module.apply({"params": p}, x, y)
        args = [[self.params, jnp.asarray(s["x"], self.jdt), jnp.asarray(s["y"], self.jdt),
                 jnp.asarray(s["g"])] for s in self.sets]
        fns = {"fwd": jax.jit(apply), "fwd+bwd": jax.jit(loss_grad(apply, 3))}
        if self.reference is not None:
            check = [self.params, *(jnp.asarray(self.check_set[k], self.jdt) for k in "xy"),
                     jnp.asarray(self.check_set["g"])]
            out = fns["fwd"](*check[:3])
            _, (dp, dx, dy) = fns["fwd+bwd"](*check)
            self._check("ours", agreement.flat(out, dx, dy, dp, self.rows))
        for mode in self.modes:
            call = rotating(fns[mode], [a if mode == "fwd+bwd" else a[:3] for a in args])
            self.entries.append(("ours", mode, bc.Variant(f"ours|{mode}", call)))

    # The floor.

    def floor(self) -> None:
        """The member's floor ops alone, on random operands: weights once, per-call operands
        and cotangents in as many copies as the inputs."""
        self.floor_ops = MEMBERS[self.name].floor(self.b, self.m, self.n, self.settings)
        specs = [spec for op in self.floor_ops for spec in op.operands(self.jdt)]
        rng = np.random.default_rng(1)
        draw = lambda shape, dtype: jnp.asarray(rng.standard_normal(shape, np.float32), dtype)

        shared = [None if per_call else draw(shape, dt) for shape, dt, per_call in specs]
        outs = jax.eval_shape(self._floor_fn, *(jax.ShapeDtypeStruct(s, d) for s, d, _ in specs))
        args = []
        for _ in range(self.copies):
            operands = [w if w is not None else draw(shape, dt)
                        for w, (shape, dt, _) in zip(shared, specs, strict=True)]
            args.append([*operands, tuple(draw(o.shape, jnp.float32) for o in outs)])
        self.floor_operand_bytes = sum(math.prod(s) * jnp.dtype(d).itemsize
                                       for s, d, _ in specs)
        self.floor_bytes_fwd = self.floor_operand_bytes + sum(4 * math.prod(o.shape)
                                                              for o in outs)
        fns = {"fwd": jax.jit(self._floor_fn),
               "fwd+bwd": jax.jit(loss_grad(self._floor_fn, len(specs)))}
        for mode in self.modes:
            call = rotating(fns[mode], [a if mode == "fwd+bwd" else a[:-1] for a in args])
            self.entries.append(("floor", mode, bc.Variant(f"floor|{mode}", call)))

    def _floor_fn(self, *operands: jax.Array) -> tuple[jax.Array, ...]:
        return tuple(op(operands[2 * i], operands[2 * i + 1])
                     for i, op in enumerate(self.floor_ops))

    # The PyTorch twin.

    def build_reference(self, torch, device: str | None) -> None:
        """The reference: the twin in float64 on the check rows (the truth, as in
        tests/ops/twin_check.py), and the tolerances from the noise around it
        (`agreement.tolerances`): the float64 twin on inputs perturbed by one rounding in the
        compute dtype, the timed twin (float32 parameters) in float32 and (bfloat16 by
        autocast) in the compute dtype. Nothing without torch."""
        self.torch, self.device = torch, device
        if torch is None or device is None:
            return
        params = jax.tree.map(np.asarray, self.params)
        build = lambda dt: MEMBERS[self.name].twin(torch, self.settings, self.m, self.n, params,
                                                   device, dt)
        twin64 = build(torch.float64)
        self.reference = self._torch_result(twin64, twin64.call, self.check_rows,
                                            torch.float64)
        rng = np.random.default_rng(2)
        eps = agreement.EPS[self.dtype]
        perturbed = {k: a * (1 + eps * rng.uniform(-1, 1, a.shape)) if k in "xy" else a
                     for k, a in self.check_rows.items()}
        noisy = [self._torch_result(twin64, twin64.call, perturbed, torch.float64)]
        del twin64
        self.twin = build(torch.float32)
        noisy.append(self._torch_result(self.twin, self.twin.call, self.check_rows,
                                        torch.float32))
        if self.dtype != "f32":
            try:
                noisy.append(self._torch_result(self.twin, self.twin.call, self.check_rows,
                                                self._torch_dtype()))
            except RuntimeError as e:
                if out_of_memory(e):
                    raise
                self.notes.append(f"{self.label}: the twin does not run under autocast "
                                  f"({str(e).splitlines()[0][:120]}): torch not timed")
                self.timed_twin = False
        self.tolerance = agreement.tolerances(self.reference, self.dtype, noisy)
        self.unchecked = [k for k, tol in self.tolerance.items() if tol is None]
        if self.timed_twin:
            self.errors["torch"] = max(agreement.relative_error(noisy[-1][k], r)
                                       for k, r in self.reference.items()
                                       if self.tolerance[k] is not None)

    def _torch_dtype(self):
        return {"f32": self.torch.float32, "bf16": self.torch.bfloat16}[self.dtype]

    def _tensors(self, s: dict[str, np.ndarray], dtype) -> tuple[Any, Any, Any]:
        """x, y (requiring gradients) in dtype and g (float32, float64 for a float64 dtype), on
        the twin's device."""
        torch = self.torch
        x, y = (torch.tensor(s[k], device=self.device).to(dtype).requires_grad_(True)
                for k in ("x", "y"))
        g_dtype = torch.promote_types(dtype, torch.float32)
        return x, y, torch.tensor(s["g"], device=self.device).to(g_dtype)

    def _run(self, fn, dtype):
        """fn under autocast to dtype (bfloat16) or as is (float32, float64)."""
        torch = self.torch
        device_type = "cuda" if self.device == "cuda" else "cpu"
        autocast = dtype not in (torch.float32, torch.float64)

        def run(x, y):
            with torch.autocast(device_type, dtype=dtype, enabled=autocast):
                return fn(x, y)

        return run

    def _torch_result(self, twin, fn, s: dict[str, np.ndarray], dtype) -> dict[str, np.ndarray]:
        """Output and gradients of sum(out * g) of fn (a call of twin, in dtype) on the inputs s,
        for the check's first rows."""
        torch = self.torch
        x, y, g = self._tensors(s, dtype)
        run = self._run(fn, dtype)
        as_np = lambda t: t.detach().to(g.dtype).cpu().numpy()
        with torch.no_grad():
            out = as_np(run(x, y))
        for p in twin.parameters:
            p.grad = None
        (run(x, y).to(g.dtype) * g).sum().backward()
        return agreement.flat(out, as_np(x.grad), as_np(y.grad), twin.grads(), self.rows)

    def torch_variants(self, compile_: bool) -> None:
        """The twin eager and under torch.compile, checked, in the compute dtype."""
        torch = self.torch
        tdt = self._torch_dtype()
        sync = torch_sync(torch, self.device)
        tsets = [self._tensors(s, tdt) for s in self.sets]
        eager = self._run(self.twin.call, tdt)
        fns = [("torch", eager)]
        if compile_:
            torch.compiler.reset()  # fresh guards per member: no silent fall-back to eager
            fns.append(("torch.compile", torch.compile(eager, dynamic=False)))
        params = self.twin.parameters
        for name, f in fns:
            if name != "torch":  # eager is the reference (f32) or set the tolerances (bf16)
                self._check(name, self._torch_result(self.twin, f, self.check_set, tdt))

            def fwd(x, y, g, f=f):
                with torch.no_grad():
                    return f(x, y)

            def fwd_bwd(x, y, g, f=f):
                for t in (*params, x, y):
                    t.grad = None
                loss = (f(x, y).float() * g).sum()
                loss.backward()
                return loss

            for mode in self.modes:
                call = rotating(fwd if mode == "fwd" else fwd_bwd, tsets)
                self.entries.append((name, mode, bc.Variant(f"{name}|{mode}", call, sync)))

    def _check(self, variant: str, got: dict[str, np.ndarray]) -> None:
        err = agreement.check(f"{self.label} {variant}", got, self.reference, self.tolerance)
        self.errors[variant] = err

    # Counts.

    def flops(self, mode: str) -> float:
        """The floor ops' FLOPs (see tools/fusion_bench/__init__.py)."""
        return sum(op.flops(mode) for op in self.floor_ops)

    def member_bytes(self, mode: str) -> float:
        """Inputs and every (float32) parameter read once, the output written once; fwd+bwd
        adds reading the float32 cotangent and writing every gradient once."""
        reads = self.b * (self.m + self.n) * self.itemsize + 4 * self.param_count
        out = math.prod(self.out_shape)
        if mode == "fwd":
            return reads + out * self.itemsize
        return 2 * reads + out * (self.itemsize + 4)

    def floor_bytes(self, mode: str) -> float:
        """Operands read once and float32 outputs written once; fwd+bwd reads the outputs'
        cotangents and writes every operand's gradient instead."""
        if mode == "fwd":
            return self.floor_bytes_fwd
        return self.floor_bytes_fwd + self.floor_operand_bytes


def bench_member(cfg: ml_collections.ConfigDict, name: str, m: int, n: int, dtype: str, b: int,
                 *, modes: Sequence[str], rounds: int, warmup: int, target_s: float,
                 refs: list[tuple[str, bc.Variant, float]], copy: tuple[bc.Variant, float],
                 torch, torch_device: str | None, torch_compile: bool,
                 notes: list[str]) -> list[dict[str, Any]]:
    """Checks and times every variant of one member at one (dtype, batch) in the same rounds as
    `refs` (the GEMM peaks in this dtype, tools.fbp_bench.references.reference_variants) and
    `copy` (the bandwidth, bandwidth_variant); one row per mode ([] where the member does not
    fit in memory, with a note)."""
    mb = MemberBench(cfg, name, m, n, dtype, b, modes, notes)
    if not mb.fits():
        return []
    mb.build_inputs()
    try:
        mb.build_reference(torch, torch_device)
    except (RuntimeError, MemoryError) as e:
        if not out_of_memory(e):
            raise
        notes.append(f"{mb.label}: torch twin out of memory: ours not checked, torch not timed")
        mb.twin = mb.reference = None
    mb.ours()
    mb.floor()
    if mb.twin is not None and mb.timed_twin:
        try:
            mb.torch_variants(torch_compile)
        except (RuntimeError, MemoryError) as e:
            if not out_of_memory(e):
                raise
            notes.append(f"{mb.label}: torch out of memory: not timed")
            mb.entries = [entry for entry in mb.entries if not entry[0].startswith("torch")]
    if torch is None or torch_device is None:
        notes.append(f"{mb.label}: no PyTorch twin on this device: ours not checked")
    copy, copy_bytes = copy
    timed = [v for _, v, _ in refs] + [copy] + [v for _, _, v in mb.entries]
    timings = bc.time_interleaved(timed, rounds=rounds, warmup=warmup, target_s=target_s)
    peaks = {lib: fl / timings[v.name].median / 1e9 for lib, v, fl in refs}
    # The fastest GEMM seen in these rounds: a square one, or a GEMM-only floor at the member's
    # shapes (its FLOPs are all GEMM FLOPs).
    gemm_only = not any(isinstance(op, FFTConv) for op in mb.floor_ops)
    floor_rates = [mb.flops(mode) / timings[v.name].median / 1e9
                   for var, mode, v in mb.entries if var == "floor" and gemm_only]
    machine_peak = max([*peaks.values(), *floor_rates])
    bandwidth = copy_bytes / timings[copy.name].median / 1e9
    physical = lambda fl, nbytes: 1e3 * max(fl / (machine_peak * 1e9), nbytes / (bandwidth * 1e9))
    rows = []
    for mode in modes:
        t = {var: timings[v.name] for var, md, v in mb.entries if md == mode}
        ms = {var: 1e3 * t[var].median for var in t}
        fl, nbytes = mb.flops(mode), mb.member_bytes(mode)
        phys_ms = physical(fl, nbytes)
        floor_phys_ms = physical(fl, mb.floor_bytes(mode))
        ours = ms["ours"]
        rows.append({
            "member": name, "mode": mode, "dtype": dtype, "batch": b, "m": m, "n": n,
            "out_dim": mb.out_shape[-1], "settings": mb.settings, "params": mb.param_count,
            "flops": fl, "bytes": nbytes, "floor_bytes": mb.floor_bytes(mode),
            "ms": ours, "iqr_pct": 100 * (t["ours"].p75 - t["ours"].p25) / t["ours"].median,
            "floor_ms": ms["floor"], "x_floor": ours / ms["floor"],
            "physical_ms": phys_ms, "x_physical": ours / phys_ms,
            "floor_physical_ms": floor_phys_ms, "floor_x_physical": ms["floor"] / floor_phys_ms,
            "torch_ms": ms.get("torch"), "torch_compile_ms": ms.get("torch.compile"),
            "torch_over_ours": ms["torch"] / ours if "torch" in ms else None,
            "compile_over_ours": (ms["torch.compile"] / ours if "torch.compile" in ms
                                  else None),
            "samples_per_s": b / t["ours"].median, "gflops_per_s": fl / t["ours"].median / 1e9,
            "gemm_peaks_gflops_per_s": peaks, "machine_peak_gflops_per_s": machine_peak,
            "bandwidth_gb_per_s": bandwidth, "input_copies": mb.copies,
            "error_vs_twin": dict(mb.errors), "unchecked_arrays": mb.unchecked,
            "timings": {var: tv.as_dict() for var, tv in t.items()}})
    return rows
