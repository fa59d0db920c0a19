"""Sizes and time budgets of one device-suite run: `Plan.device()` for the GPU machine,
`Plan.dry()` for every section at tiny sizes on the CPU (reasoning in tools/device_suite.py)."""

from __future__ import annotations

import dataclasses
import os

from tools.fusion_bench import REFERENCE_INPUTS, REFERENCE_ROWS

SECTIONS = ("setup", "pytest", "fbp", "fusion", "train", "twin", "corpus", "host", "e2e")
GIB = 2**30


@dataclasses.dataclass
class Plan:
    """Sizes and time budgets of one suite run (`Plan.device()` or `Plan.dry()`)."""

    dry_run: bool
    total_s: float  # the whole suite
    # Seconds per section. Sections run in SECTIONS order (but "corpus", in the background) and
    # each ends by the sum of its own and the earlier sections' budgets after the start, so a
    # section may use what earlier ones left (only "train" and "twin" have cases to spend it on).
    budgets: dict[str, float]
    # fbp
    fbp_dims: tuple[int, int, int, int]
    fbp_batches: tuple[int, ...]
    fbp_dtypes: tuple[str, ...]
    fbp_rounds: int
    fbp_target_ms: float
    fbp_torch_compile: bool
    # fusion
    fusion_inputs: tuple[int, int]
    fusion_batches: tuple[int, ...]
    fusion_dtypes: tuple[str, ...]
    fusion_rounds: int
    fusion_target_ms: float
    fusion_member_s: float  # a member is started only with this much of the budget left
    # train
    width: float  # stream width multiplier (1 = paper-sized)
    seconds: float  # audio per sample
    frames: int  # face crops per sample
    gemm_size: int
    fusions: tuple[str, ...]
    dtypes: tuple[str, ...]
    step_batch: int  # every fusion x dtype at this batch
    fit_batches: tuple[int, ...]  # amfbp: batches measured before its largest batch
    small_batches: tuple[int, ...]  # amfbp: the small-batch end of the sweep, measured last
    pallas_batches: tuple[int, ...]  # amfbp with model.fbp_impl "pallas", each dtype
    max_fusions: tuple[str, ...]  # fusions whose largest batch is searched
    max_batch_cap: int
    batch_multiple: int  # the largest batch is a multiple of this
    memory_limit_gb: float | None  # None: the device's bytes_limit
    step_rounds: int
    # twin (our AM-FBP step against its PyTorch twin's; timed with step_rounds)
    twin_widths: tuple[float, ...]
    twin_batch: int
    twin_compile: str  # torch.compile backend of the twin, "none" for the eager twin only
    # corpus, host, e2e
    clips: int
    clip_seconds: tuple[float, float]
    workers: int
    loader_batches: tuple[int, ...]
    loader_threads: int
    loader_seconds: float
    e2e_steps: int
    e2e_batch: int
    e2e_overrides: tuple[str, ...]

    @classmethod
    def device(cls) -> Plan:
        """One H200 with 16 cores, 8 minutes in all (reasoning in tools/device_suite.py)."""
        cores = os.cpu_count() or 16
        return cls(
            dry_run=False, total_s=480,
            budgets={"setup": 20, "pytest": 90, "fbp": 105, "fusion": 35, "train": 40,
                     "twin": 45, "corpus": 170, "host": 25, "e2e": 120},
            fbp_dims=(512, 512, 5, 1000), fbp_batches=(8192, 65536), fbp_dtypes=("bf16", "f32"),
            fbp_rounds=5, fbp_target_ms=20.0,
            fbp_torch_compile=True, fusion_inputs=REFERENCE_INPUTS,
            fusion_batches=(REFERENCE_ROWS,), fusion_dtypes=("bf16",), fusion_rounds=3,
            fusion_target_ms=10.0, fusion_member_s=6.0, width=1.0, seconds=4.0, frames=40,
            gemm_size=8192,
            fusions=("amfbp", "audio", "video", "concat", "late", "gfbp", "agfbp"),
            dtypes=("bf16", "f32"),
            step_batch=256, fit_batches=(256, 1024), small_batches=(64,), pallas_batches=(1024,),
            max_fusions=("amfbp", "gfbp"),
            max_batch_cap=65536, batch_multiple=64, memory_limit_gb=None, step_rounds=3,
            twin_widths=(1.0, 0.125), twin_batch=256, twin_compile="inductor",
            # 366 clips per class: 256 train each (70/15/15 split), so 1024 train clips fill
            # exactly one batch of 1024 with no padding row.
            clips=1464, clip_seconds=(3.6, 4.0), workers=max(1, cores // 2),
            loader_batches=(256, 1024), loader_threads=cores, loader_seconds=4.0,
            e2e_steps=300, e2e_batch=1024, e2e_overrides=(),
        )

    @classmethod
    def dry(cls) -> Plan:
        """Tiny sizes on the CPU: every section and code path, in about a minute."""
        return cls(
            dry_run=True, total_s=600,
            budgets={"setup": 60, "pytest": 120, "fbp": 120, "fusion": 120, "train": 180,
                     "twin": 180, "corpus": 120, "host": 60, "e2e": 180},
            fbp_dims=(32, 24, 5, 16), fbp_batches=(8,), fbp_dtypes=("f32", "bf16"), fbp_rounds=2,
            fbp_target_ms=5.0,
            fbp_torch_compile=False, fusion_inputs=(24, 16), fusion_batches=(8,),
            fusion_dtypes=("f32",), fusion_rounds=2, fusion_target_ms=5.0, fusion_member_s=0.0,
            width=0.03, seconds=1.0, frames=10, gemm_size=256,
            fusions=("amfbp",), dtypes=("bf16",),
            step_batch=8, fit_batches=(8, 16), small_batches=(), pallas_batches=(),
            max_fusions=("amfbp",),
            max_batch_cap=16, batch_multiple=8, memory_limit_gb=0.5, step_rounds=2,
            twin_widths=(0.03,), twin_batch=8, twin_compile="aot_eager",
            clips=16, clip_seconds=(0.8, 1.0), workers=2,
            loader_batches=(8,), loader_threads=2, loader_seconds=0.5,
            e2e_steps=3, e2e_batch=8,
            e2e_overrides=("train.warmup_steps=1",),
        )
