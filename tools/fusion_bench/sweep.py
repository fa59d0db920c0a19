"""The fusion benchmark's sweep: `run_benchmark` over dtypes x batches x members, each member at
one (dtype, batch) by `bench_member`."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections

from avfbp_jax.models.config import FUSION_OPS
from tools import bench_common as bc
from tools.fbp_bench.references import bandwidth_variant, reference_variants
from tools.fbp_bench.torch_twin import torch_device_for
from tools.fusion_bench import REFERENCE_INPUTS, REFERENCE_ROWS
from tools.fusion_bench import __doc__ as COUNTING
from tools.fusion_bench.agreement import SPREAD, TOLERANCE
from tools.fusion_bench.member_bench import MODES, bench_member
from tools.fusion_bench.members import MEMBERS

FLOP_NOTE, BYTE_NOTE = (" ".join(next(p for p in COUNTING.split("\n\n") if p.startswith(head))
                                  .split()) for head in ("FLOPs are", "Bytes are"))
# The family in the model's order, as far as it is in the member table.
FAMILY = tuple(name for name in FUSION_OPS if name in MEMBERS)


def run_benchmark(cfg: ml_collections.ConfigDict, members: Sequence[str],
                  inputs: tuple[int, int], batches: Sequence[int], dtypes: Sequence[str],
                  modes: Sequence[str], *, rounds: int = 5, warmup: int = 2,
                  target_ms: float = 50.0, gemm_size: int | None = None, use_torch: bool = True,
                  torch_compile: bool = True, keep_going: bool = False,
                  stop: Callable[[], bool] = lambda: False,
                  progress: Callable[[dict[str, Any]], Any] = lambda result: None,
                  log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Runs the sweep and returns the JSON-able result: rows, machine, settings, notes.

    cfg: the model config whose settings the members take (model_config() for the reference
    sizes); inputs: (m, n), the two inputs' sizes. keep_going: a member that fails (a
    Disagreement included) is recorded in result["errors"] and the sweep goes on; otherwise the
    error stops it. stop(): checked before each member, True skips the rest (listed in
    result["skipped"]). progress(result): called after each member.
    """
    for name, got, allowed in [("members", members, FAMILY), ("modes", modes, MODES),
                               ("dtypes", dtypes, tuple(bc.DTYPES))]:
        if not got or set(got) - set(allowed):
            raise ValueError(f"{name}: choose from {allowed}, got {list(got)}")
    backend = jax.default_backend()
    gemm_size = gemm_size or (1024 if backend == "cpu" else 8192)
    notes: list[str] = []
    torch, torch_device = torch_device_for(backend, notes) if use_torch else (None, None)
    info = bc.machine_info()
    log(f"# bench_fusion on {bc.describe_machine(info)}")
    m, n = inputs
    result = {"benchmark": "fusion", "machine": info, "inputs": {"m": m, "n": n},
              "reference": {"inputs": REFERENCE_INPUTS, "rows_per_vqa_batch": REFERENCE_ROWS,
                            "source": "Cadene/block.bootstrap.pytorch@769a638 "
                                      "block/options/vqa2/*.yaml (attention fusion input_dims, "
                                      "abstract.yaml batch_size 64 x 36 regions)"},
              "flop_counting": FLOP_NOTE, "byte_counting": BYTE_NOTE, "gemm_size": gemm_size,
              "agreement": {"tolerance": TOLERANCE, "spread": SPREAD},
              "rows": [], "notes": notes, "errors": [], "skipped": []}
    copy = bandwidth_variant()
    for dtype in dtypes:
        refs = reference_variants(dtype, gemm_size, torch, torch_device)
        for b in batches:
            for name in members:
                label, start = f"{name} {dtype} B={b}", time.time()
                if stop():
                    result["skipped"].append(label)
                    continue
                try:
                    result["rows"] += bench_member(
                        cfg, name, m, n, dtype, b, modes=modes, rounds=rounds, warmup=warmup,
                        target_s=target_ms / 1e3, refs=refs, copy=copy, torch=torch,
                        torch_device=torch_device, torch_compile=torch_compile, notes=notes)
                except Exception as e:
                    if not keep_going:
                        raise
                    result["errors"].append(f"{label}: {type(e).__name__}: {str(e)[:500]}")
                log(f"  done {label} ({time.time() - start:.0f} s)")
                result["machine"]["loadavg_1m_end"] = os.getloadavg()[0]
                progress(result)
    return result
