"""The device suite's library (design brief §9; tools/device_suite.py is its command).

One run produces the whole accelerator picture: the driver (`run_suite`) installs the carried
wheels, then runs each section in its own Python process with its own time budget, so that a
crash, an out-of-memory error or a hang in one section is recorded and the next one still runs,
and each section starts with the whole device memory (JAX preallocates per process; the FBP
section shares the GPU with PyTorch). A section writes its results to a JSON part file after
every case, so a section stopped at its budget still reports what it finished.

Sections, in order (the corpus section runs in the background from the start of "pytest" on
half the cores, and "host" waits for it):
  setup   machine, driver, versions, jax.devices(), nvidia-smi, the commit
  pytest  `pytest -m gpu` with every platform visible (JAX_PLATFORMS empty), per-test outcomes
  fbp     tools/bench_fbp.run_benchmark at the MFB size 512:512:5:1000
  train   the paper-sized train step: every fusion x dtype at one batch, a batch sweep and the
          largest batch that fits (see `section_train`), GEMM peaks timed in the same process
  corpus  a synthetic corpus of clips as long as the step's input, and its feature cache
  host    loader samples/s with the machine's cores, bytes per sample, host->device rate
  e2e     experiments/large_batch.py for a few hundred steps through train_and_evaluate
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

TOOLS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TOOLS)
SECTIONS = ("setup", "pytest", "fbp", "train", "corpus", "host", "e2e")
FBP_IMPLS = ("floor", "xla", "pallas", "torch")  # bench_fbp.IMPLS without the naive layer
GIB = 2**30


@dataclasses.dataclass
class Plan:
    """Sizes and time budgets of one suite run (`Plan.device()` or `Plan.dry()`)."""

    dry_run: bool
    total_s: float  # the whole suite
    # Seconds per section. Sections run in SECTIONS order (but "corpus", in the background) and
    # each ends by the sum of its own and the earlier sections' budgets after the start, so a
    # section may use what earlier ones left (only "train" has cases to spend it on).
    budgets: dict[str, float]
    # fbp
    fbp_dims: tuple[int, int, int, int]
    fbp_batches: tuple[int, ...]
    fbp_dtypes: tuple[str, ...]
    fbp_rounds: int
    fbp_target_ms: float
    fbp_torch_compile: bool
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
            budgets={"setup": 20, "pytest": 75, "fbp": 110, "train": 130, "corpus": 170,
                     "host": 25, "e2e": 120},
            fbp_dims=(512, 512, 5, 1000), fbp_batches=(8192, 65536), fbp_dtypes=("bf16", "f32"),
            fbp_rounds=5, fbp_target_ms=20.0,
            fbp_torch_compile=True, width=1.0, seconds=4.0, frames=40, gemm_size=8192,
            fusions=("amfbp", "audio", "video", "concat", "late", "gfbp", "agfbp"),
            dtypes=("bf16", "f32"),
            step_batch=256, fit_batches=(256, 1024), small_batches=(64,), pallas_batches=(1024,),
            max_fusions=("amfbp", "gfbp"),
            max_batch_cap=65536, batch_multiple=64, memory_limit_gb=None, step_rounds=3,
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
            budgets={"setup": 60, "pytest": 120, "fbp": 120, "train": 180, "corpus": 120,
                     "host": 60, "e2e": 180},
            fbp_dims=(32, 24, 5, 16), fbp_batches=(8,), fbp_dtypes=("f32", "bf16"), fbp_rounds=2,
            fbp_target_ms=5.0,
            fbp_torch_compile=False, width=0.03, seconds=1.0, frames=10, gemm_size=256,
            fusions=("amfbp",), dtypes=("bf16",),
            step_batch=8, fit_batches=(8, 16), small_batches=(), pallas_batches=(),
            max_fusions=("amfbp",),
            max_batch_cap=16, batch_multiple=8, memory_limit_gb=0.5, step_rounds=2,
            clips=16, clip_seconds=(0.8, 1.0), workers=2,
            loader_batches=(8,), loader_threads=2, loader_seconds=0.5,
            e2e_steps=3, e2e_batch=8,
            e2e_overrides=("model.audio.width=0.03", "model.audio.attention_dim=8",
                           "model.video.cnn_channels=(4,4,4)", "model.video.feature_dim=8",
                           "model.fbp_o=8", "model.adaptive_hidden=8", "model.head_hidden=8",
                           "train.warmup_steps=1"),
        )


# ============================================================================ driver
def run_suite(plan: Plan, out_dir: str, *, commit: str, wheels: str,
              only: tuple[str, ...] = SECTIONS) -> dict[str, Any]:
    """Runs every section, writes OUT/suite.json, OUT/suite.md (both rewritten after every
    section) and OUT/suite.log; returns the result (the tables are `result["markdown"]`)."""
    os.makedirs(out_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="device_suite_")
    t0 = time.time()
    result: dict[str, Any] = {"suite": "device", "dry_run": plan.dry_run, "commit": commit,
                              "started_utc": _utc(), "plan": dataclasses.asdict(plan),
                              "sections": {}}
    log = open(os.path.join(out_dir, "suite.log"), "w", buffering=1)  # noqa: SIM115
    env = dict(os.environ)
    result["install"] = install_wheels(wheels, os.path.join(work, "site"), log)
    site = result["install"].get("target")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (site, REPO, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env["JAX_PLATFORMS"] = "cpu" if plan.dry_run else ""  # "": every platform (GPU and CPU)
    if plan.dry_run:
        env["XLA_FLAGS"] = ""  # one CPU device, like one GPU
    plan_file = os.path.join(work, "plan.json")
    with open(plan_file, "w") as f:
        json.dump({**dataclasses.asdict(plan), "work": work, "commit": commit}, f)

    def start(name: str, end: float) -> Section:
        section_env = dict(env)
        if name != "train":  # torch shares the GPU in "fbp"; the others need little memory
            section_env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
        else:  # the largest batch is searched against nearly the whole card
            section_env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = "0.94"
        end = min(end, t0 + plan.total_s)
        return Section(name, end - time.time(), plan_file, work, section_env, log)

    corpus = None
    end = t0
    for name in SECTIONS:
        if name not in only or name == "corpus":
            continue
        end += plan.budgets[name]
        if name == "pytest" and "corpus" in only:
            corpus = start("corpus", time.time() + plan.budgets["corpus"])
        if name == "host" and corpus is not None:
            result["sections"]["corpus"] = corpus.wait()
            corpus = None
        if min(end, t0 + plan.total_s) - time.time() < 5:
            result["sections"][name] = {"status": "not run: no time left"}
        else:
            result["sections"][name] = start(name, end).wait()
        _write_result(out_dir, result, t0)
    if corpus is not None:
        result["sections"]["corpus"] = corpus.wait()
    _write_result(out_dir, result, t0)
    log.close()
    shutil.rmtree(work, ignore_errors=True)
    return result


def _write_result(out_dir: str, result: dict[str, Any], t0: float) -> None:
    import bench_common as bc

    from avfbp_jax.train import report

    result["wall_s"] = time.time() - t0
    result["summary"] = summarize(result)
    result["markdown"] = markdown(result)
    bc.write_json(os.path.join(out_dir, "suite.json"), result)
    report.write_text(os.path.join(out_dir, "suite.md"), result["markdown"])


def install_wheels(wheels: str, target: str, log) -> dict[str, Any]:
    """pip install --no-index --no-deps every wheel in `wheels` into `target` (the device README's
    recipe); the project itself is not installed: the sections import it from the repository
    through PYTHONPATH (nothing to build, and exactly the tree that travelled)."""
    start = time.time()
    files = sorted(f for f in os.listdir(wheels) if f.endswith(".whl")) if wheels else []
    if not files:
        return {"status": f"skipped: no wheels in {wheels or '(none given)'}", "wheels": [],
                "seconds": time.time() - start}
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
           "--no-cache-dir", "--upgrade", "--target", target,
           *(os.path.join(wheels, f) for f in files)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    log.write(f"[install] {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
    status = ("ok" if proc.returncode == 0
              else f"failed (rc {proc.returncode}): {proc.stderr[-500:]}")
    return {"status": status, "wheels": files, "target": target, "seconds": time.time() - start}


class Section:
    """One section in its own process group; output goes to the log and to stdout."""

    GRACE_S = 20.0  # past the budget the section's own deadline checks should have stopped it

    def __init__(self, name: str, budget: float, plan_file: str, work: str, env: dict, log):
        self.name, self.budget, self.log = name, budget, log
        self.part = os.path.join(work, f"{name}.json")
        self.start = time.time()
        env = {**env, "SUITE_DEADLINE": str(self.start + budget)}
        cmd = [sys.executable, os.path.join(TOOLS, "device_suite.py"), "--section", name,
               "--plan", plan_file, "--part", self.part]
        print(f"=== {name} (budget {budget:.0f} s) {_utc()}", flush=True)
        log.write(f"=== {name} (budget {budget:.0f} s) {_utc()}\n")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.tail: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.log.write(f"[{self.name}] {line}")
            print(f"[{self.name}] {line}", end="", flush=True)
            self.tail = (self.tail + [line.rstrip()])[-30:]
        self.end = time.time()  # output closed: the section has ended (or was killed)

    def wait(self) -> dict[str, Any]:
        left = self.start + self.budget + self.GRACE_S - time.time()
        try:
            rc = self.proc.wait(timeout=max(left, 1.0))
            status = "ok" if rc == 0 else f"failed (rc {rc})"
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the section and the workers it started
            self.proc.wait()
            status = f"killed at its budget + {self.GRACE_S:.0f} s"
        self.reader.join(5)
        part = _read_json(self.part)
        end = getattr(self, "end", time.time())
        part.update(status=status, wall_s=end - self.start, budget_s=self.budget)
        if status != "ok":
            part["output_tail"] = self.tail
        return part


def _read_json(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ============================================================================ one section
class Part(dict):
    """A section's results, written to its part file at every save() (and errors recorded)."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def save(self) -> None:
        import bench_common as bc

        bc.write_json(self.path, dict(self))

    def error(self, where: str, exc: BaseException) -> None:
        self.setdefault("errors", []).append(f"{where}: {type(exc).__name__}: {str(exc)[:800]}")
        print(f"ERROR {where}: {type(exc).__name__}: {str(exc)[:800]}", flush=True)
        self.save()


def time_left() -> float:
    return float(os.environ.get("SUITE_DEADLINE", "inf")) - time.time()


def run_section(name: str, plan_file: str, part_file: str) -> int:
    """Runs one section (in the process device_suite.py --section starts); 0 unless it raised."""
    with open(plan_file) as f:
        raw = json.load(f)
    work, commit = raw.pop("work"), raw.pop("commit")
    plan = Plan(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
    part = Part(part_file)
    fn: Callable[..., None] = {
        "setup": section_setup, "pytest": section_pytest, "fbp": section_fbp,
        "train": section_train, "corpus": section_corpus, "host": section_host,
        "e2e": section_e2e}[name]
    try:
        fn(plan, part, work=work, commit=commit)
    except BaseException as e:  # noqa: BLE001 - recorded in the JSON, the suite goes on
        part.error(name, e)
        return 1
    part.save()
    return 0


# ---------------------------------------------------------------------------- setup
def section_setup(plan: Plan, part: Part, *, work: str, commit: str) -> None:
    """What the numbers were measured on."""
    import importlib.metadata as md

    import bench_common as bc
    import jax

    part["commit"] = commit
    part["machine"] = bc.machine_info()
    part["devices"] = [str(d) for d in jax.devices()]
    stats = jax.devices()[0].memory_stats() or {}
    part["bytes_limit"] = stats.get("bytes_limit")
    versions = {}
    for pkg in ("jax", "jaxlib", "jax-cuda13-plugin", "flax", "optax", "orbax-checkpoint",
                "numpy", "torch", "triton", "soundfile", "av", "ml-collections", "tensorboardX",
                "opencv-python-headless"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    part["versions"] = versions
    part["imports_ok"] = _check_imports()
    smi = shutil.which("nvidia-smi")
    if smi:
        q = subprocess.run([smi, "--query-gpu=name,memory.total,driver_version,clocks.sm,"
                            "clocks.max.sm,power.limit,temperature.gpu", "--format=csv"],
                           capture_output=True, text=True)
        part["nvidia_smi"] = q.stdout.strip()
        print(subprocess.run([smi], capture_output=True, text=True).stdout, flush=True)
    else:
        part["nvidia_smi"] = "nvidia-smi not found"
    print(json.dumps({k: part[k] for k in ("devices", "versions", "imports_ok")}, indent=1))


def _check_imports() -> dict[str, str]:
    """Every module that the package imports at the top of a module, including the wheels."""
    import importlib

    out = {}
    for mod in ("soundfile", "av", "cv2", "ml_collections", "tensorboardX", "avfbp_jax.cli",
                "avfbp_jax.train.loop", "avfbp_jax.data.prepare"):
        try:
            importlib.import_module(mod)
            out[mod] = "ok"
        except Exception as e:  # noqa: BLE001 - each one recorded
            out[mod] = f"{type(e).__name__}: {e}"
    return out


# ---------------------------------------------------------------------------- pytest
def section_pytest(plan: Plan, part: Part, *, work: str, commit: str) -> None:
    """`pytest -m gpu` over tests/ (the command line's -m replaces setup.cfg's
    `-m "not gpu and not tpu"`; a test module that fails to import is reported, not fatal);
    per-test outcomes from its JUnit XML."""
    xml = os.path.join(work, "pytest.xml")
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
           "--continue-on-collection-errors", f"--junitxml={xml}", "tests"]
    part["command"] = " ".join(cmd[1:])
    try:
        proc = subprocess.run(cmd, cwd=REPO, timeout=max(time_left() - 5, 10))
        part["returncode"] = proc.returncode
    except subprocess.TimeoutExpired:
        part["returncode"] = None
        part["timed_out"] = True
    part.update(junit_outcomes(xml))


def junit_outcomes(path: str) -> dict[str, Any]:
    """Counts and per-test outcomes ("passed", "failed", "error", "skipped") of a JUnit XML."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        return {"junit_error": str(e)}
    tests = {}
    for case in root.iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcome = {"failure": "failed"}.get(kinds[0], kinds[0]) if kinds else "passed"
        detail = next((c.get("message") for c in case if c.tag in ("failure", "error", "skipped")),
                      None)
        tests[name] = {"outcome": outcome, "seconds": float(case.get("time") or 0),
                       **({"message": (detail or "")[:500]} if detail else {})}
    counts = {k: sum(t["outcome"] == k for t in tests.values())
              for k in ("passed", "failed", "error", "skipped")}
    return {"counts": counts, "tests": tests}


# ---------------------------------------------------------------------------- fbp
def section_fbp(plan: Plan, part: Part, *, work: str, commit: str) -> None:
    """tools/bench_fbp.py's run_benchmark over every variant at the MFB size, one call per
    (batch, dtype), largest batch first, the merged result saved after each (a section stopped
    at its budget keeps the shapes it finished)."""
    import bench_fbp

    for b in sorted(plan.fbp_batches, reverse=True):
        for dtype in plan.fbp_dtypes:
            result = bench_fbp.run_benchmark(
                [plan.fbp_dims], [b], [dtype], ["fwd", "fwd+bwd"], list(FBP_IMPLS),
                rounds=plan.fbp_rounds, target_ms=plan.fbp_target_ms, gemm_size=plan.gemm_size,
                torch_compile=plan.fbp_torch_compile)
            part["result"] = merge_fbp(part["result"], result) if "result" in part else result
            part.save()


def merge_fbp(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two run_benchmark results as one: rows and notes joined, per-dtype peaks updated, the
    targets recomputed over all rows."""
    import bench_fbp

    out = dict(b, rows=a["rows"] + b["rows"], notes=list(dict.fromkeys(a["notes"] + b["notes"])))
    for key in ("gemm_peak_gflops_per_s", "gemm_peaks_by_library_gflops_per_s"):
        out[key] = {**a[key], **b[key]}
    out["targets"] = bench_fbp.targets(out["rows"], b["machine"]["backend"])
    return out


# ---------------------------------------------------------------------------- train
def section_train(plan: Plan, part: Part, *, work: str, commit: str) -> None:
    """The paper-sized train step (`plan.seconds` of audio and `plan.frames` crops per sample).

    Cases, most important first, each skipped once the budget cannot hold it (the estimate is
    1.5x the slowest case so far, compile and timing); each step is done for bf16, then f32:
      1. amfbp at `fit_batches`, then its largest batch;
      2. the other fusions at `step_batch`;
      3. amfbp with the Pallas FBP (model.fbp_impl) at `pallas_batches`;
      4. amfbp at `small_batches`;
      5. the largest batch of the other `max_fusions`.
    The largest batch is found, not guessed: each case is compiled ahead of time and XLA's
    buffer assignment (compiled.memory_analysis(): arguments + outputs - donated + temporaries)
    gives its device bytes before it runs; a straight line through the two largest batches that
    fit predicts the batch that fills `bytes_limit` (the allocator's limit, 94% of the card),
    rounded down to `batch_multiple`; that batch is compiled, checked against the limit and
    run; if it does not fit or the run raises RESOURCE_EXHAUSTED, 10% less, up to three tries.
    """
    import bench_common as bc
    import jax

    from avfbp_jax.train import parallel

    dev = jax.devices()[0]
    stats = dev.memory_stats() or {}
    limit = (plan.memory_limit_gb * GIB if plan.memory_limit_gb is not None
             else stats.get("bytes_limit"))
    part.update(device=dev.device_kind, bytes_limit=limit, width=plan.width,
                seconds=plan.seconds, frames=plan.frames, rows=[], max_batch={}, skipped=[])
    mesh = parallel.make_mesh(1)
    peaks = {}
    for dtype in plan.dtypes:
        gemm, gemm_flops = bc.gemm_variant(bc.DTYPES[dtype], plan.gemm_size)
        t = bc.time_interleaved([gemm], rounds=5, target_s=0.2)[gemm.name]
        peaks[dtype] = gemm_flops / t.median / 1e12
        del gemm
    part["gemm_peak_tflops"] = peaks
    part["gemm_size"] = plan.gemm_size
    part.save()
    runner = _StepRunner(plan, part, mesh, limit, peaks)
    for dtype in plan.dtypes:
        for b in plan.fit_batches:
            runner.case("amfbp", dtype, b)
        runner.largest("amfbp", dtype)
    for dtype in plan.dtypes:
        for f in plan.fusions:
            runner.case(f, dtype, plan.step_batch)
    for dtype in plan.dtypes:
        for b in plan.pallas_batches:
            runner.case("amfbp", dtype, b, fbp_impl="pallas")
    for dtype in plan.dtypes:
        for b in plan.small_batches:
            runner.case("amfbp", dtype, b)
    for dtype in plan.dtypes:
        for f in plan.max_fusions:
            if f != "amfbp":
                runner.largest(f, dtype)
    stats = dev.memory_stats() or {}
    part["peak_bytes_in_use"] = stats.get("peak_bytes_in_use")


class _StepRunner:
    """Compiles, checks and times train-step cases; keeps the rows in the section's part."""

    def __init__(self, plan: Plan, part: Part, mesh, limit: float | None, peaks: dict):
        self.plan, self.part, self.mesh, self.limit, self.peaks = plan, part, mesh, limit, peaks
        self.slowest = 0.0  # seconds of the slowest case so far (compile + timing)
        self.initial: dict[tuple[str, str], Any] = {}  # host initial state per (fusion, dtype)

    def _affordable(self, what: str) -> bool:
        if time_left() > 1.5 * self.slowest + 5:
            return True
        self.part["skipped"].append(f"{what}: time budget")
        self.part.save()
        return False

    def case(self, fusion: str, dtype: str, batch: int, purpose: str = "",
             fbp_impl: str = "xla") -> dict | None:
        """One case: compile, predict bytes, run if it fits; returns its row (None if skipped)."""
        import bench_common as bc
        import bench_train as bt
        import jax

        what = f"{fusion} {dtype} batch {batch}" + (f" fbp_impl {fbp_impl}"
                                                     if fbp_impl != "xla" else "")
        key = (fusion, dtype, batch, fbp_impl)
        done = [r for r in self.part["rows"]
                if (r["fusion"], r["dtype"], r["batch"], r["fbp_impl"]) == key]
        if done:
            return done[0]
        if not self._affordable(what):
            return None
        start = time.time()
        row: dict[str, Any] = {"fusion": fusion, "dtype": dtype, "batch": batch,
                               "fbp_impl": fbp_impl, "purpose": purpose}
        case = None
        try:
            cfg = bt.make_model_config(fusion, dtype, self.plan.width, fbp_impl)
            case = bt.StepCase(cfg, self.mesh, batch, self.plan.seconds, self.plan.frames,
                               state=self.initial.get((fusion, dtype)))
            self.initial[(fusion, dtype)] = case.initial  # the same parameters for both FBPs
            row.update(compile_s=case.compile_s, device_bytes=case.device_bytes,
                       gflop_per_sample=case.flops_per_sample / 1e9,
                       lowered_gflop_per_sample=(case.lowered_flops_per_sample or 0) / 1e9
                       or None)
            if self.limit and case.device_bytes and case.device_bytes > self.limit:
                row["fits"] = False
                row["why"] = (f"memory_analysis {case.device_bytes / GIB:.1f} GiB > limit "
                              f"{self.limit / GIB:.1f} GiB")
            else:
                t = bc.time_interleaved([bc.Variant(what, case)], rounds=self.plan.step_rounds,
                                        warmup=2, target_s=0.3)[what]
                tflops = case.flops_per_sample * batch / t.median / 1e12
                row.update(fits=True, ms=1e3 * t.median, iqr_pct=100 * (t.p75 - t.p25) / t.median,
                           samples_per_s=batch / t.median, tflops_per_s=tflops,
                           pct_peak=100 * tflops / self.peaks[dtype])
                stats = jax.devices()[0].memory_stats() or {}
                row["running_peak_bytes"] = stats.get("peak_bytes_in_use")
        except Exception as e:  # noqa: BLE001 - OOM and other failures are results here
            row["fits"] = False
            row["why"] = f"{type(e).__name__}: {str(e)[:300]}"
            if "RESOURCE_EXHAUSTED" not in str(e) and "out of memory" not in str(e).lower():
                self.part.error(what, e)
        finally:
            del case
        row["case_s"] = time.time() - start
        self.slowest = max(self.slowest, row["case_s"])
        self.part["rows"].append(row)
        self.part.save()
        print(f"  {what}: " + (f"{row['samples_per_s']:.1f} samples/s, compile "
              f"{row['compile_s']:.1f} s" if row.get("fits") else f"does not run: {row['why']}"),
              flush=True)
        return row

    def largest(self, fusion: str, dtype: str) -> None:
        """The largest batch of (fusion, dtype) that compiles and runs (see section_train)."""
        plan = self.plan
        def fitting() -> list[dict]:
            return sorted((r for r in self.part["rows"]
                           if (r["fusion"], r["dtype"], r["fbp_impl"]) == (fusion, dtype, "xla")
                           and r.get("device_bytes") and r.get("fits")), key=lambda r: r["batch"])

        fit = fitting()
        if len(fit) < 2:
            extra = [b for b in (plan.step_batch, 4 * plan.step_batch)
                     if b not in {r["batch"] for r in fit}]
            for b in extra[: 2 - len(fit)]:
                self.case(fusion, dtype, b, "fit")
            fit = fitting()
        key = f"{fusion} {dtype}"
        if len(fit) < 2 or not self.limit:
            self.part["max_batch"][key] = {"found": None, "why": "fewer than two fitting cases"
                                           if self.limit else "the device reports no limit"}
            self.part.save()
            return
        (b0, m0), (b1, m1) = [(r["batch"], r["device_bytes"]) for r in fit[-2:]]
        per_sample = (m1 - m0) / (b1 - b0)
        fixed = m0 - per_sample * b0
        predicted = int((self.limit - fixed) / per_sample) if per_sample > 0 else plan.max_batch_cap
        batch = max(min(predicted, plan.max_batch_cap) // plan.batch_multiple
                    * plan.batch_multiple, plan.batch_multiple)
        info = {"fit_batches": [b0, b1], "bytes_per_sample": per_sample, "fixed_bytes": fixed,
                "predicted": predicted, "limit_bytes": self.limit, "tries": []}
        found = fit[-1]
        for _ in range(3):
            if batch <= found["batch"]:
                break
            row = self.case(fusion, dtype, batch, "largest")
            if row is None:
                info["why_stopped"] = "time budget"
                break
            info["tries"].append({"batch": batch, "fits": row.get("fits"),
                                  "why": row.get("why")})
            if row.get("fits"):
                found = row
                break
            batch = int(batch * 0.9) // plan.batch_multiple * plan.batch_multiple
        info.update(found=found["batch"], samples_per_s=found.get("samples_per_s"),
                    device_bytes=found.get("device_bytes"),
                    capped=predicted >= plan.max_batch_cap)
        if info["capped"]:
            info["why"] = f"capped at {plan.max_batch_cap} (the line predicts {predicted})"
        self.part["max_batch"][key] = info
        self.part.save()


# ---------------------------------------------------------------------------- corpus
def section_corpus(plan: Plan, part: Part, *, work: str, commit: str) -> None:
    """The synthetic corpus (clips as long as the step's input) and its feature cache, prepared
    at the paper-sized inputs: 64x64 crops at 10 frames/s.

    Where OpenCV has no Haar cascade (opencv 5.x wheels dropped it; the GPU image's version is
    not known here, and a 4.x wheel is too large to carry beside PyAV), `prepare` cannot crop
    faces: the cache is then written by `write_whole_frame_cache` instead (same decoding, same
    cache format, the whole frame as the crop), so that "host" and "e2e" still run; the JSON
    says which path ran.
    """
    from avfbp_jax.data import prepare, synthetic
    from avfbp_jax.data.config import data_config
    from avfbp_jax.data.faces import FaceCropper

    corpus, cache = os.path.join(work, "corpus"), os.path.join(work, "cache")
    lo, hi = plan.clip_seconds
    cues = dataclasses.replace(synthetic.Cues(), min_seconds=lo, max_seconds=hi)
    start = time.time()
    synthetic.write_corpus(corpus, clips=plan.clips, seed=0, cues=cues, workers=plan.workers)
    synth_s = time.time() - start
    part.update(corpus=corpus, clips=plan.clips, clip_seconds=list(plan.clip_seconds),
                workers=plan.workers, synth_s=synth_s, synth_clips_per_s=plan.clips / synth_s)
    part.save()
    fps = plan.frames / plan.seconds
    try:
        FaceCropper(64)
        part["cache_writer"] = "avfbp prepare"
    except Exception as e:  # noqa: BLE001 - any failure to load the detector
        part["cache_writer"] = f"whole frames (no face detector: {type(e).__name__}: {e})"
    start = time.time()
    if part["cache_writer"] == "avfbp prepare":
        settings = data_config()
        settings.fps, settings.crop_size = fps, 64
        if not prepare.prepare_cache(corpus, cache, settings, workers=plan.workers)["records"]:
            raise RuntimeError("prepare failed: no usable clip (see the cache index)")
    else:
        write_whole_frame_cache(corpus, cache, fps=fps, crop_size=64, workers=plan.workers)
    prepare_s = time.time() - start
    part.update(cache=cache, fps=fps, crop_size=64, prepare_s=prepare_s,
                prepare_clips_per_s=plan.clips / prepare_s)


def write_whole_frame_cache(corpus_dir: str, cache_dir: str, *, fps: float, crop_size: int,
                            workers: int) -> None:
    """A feature cache of a folder corpus without face detection: each frame, whole, resized to
    crop_size (the synthetic corpus's face fills most of the frame), every frame marked found."""
    import multiprocessing

    from avfbp_jax.data import cache
    from avfbp_jax.data.corpora import read_corpus

    corpus = read_corpus("folder", corpus_dir, excited_as_happy=True, marker_actor_side="",
                         seed=0)
    os.makedirs(os.path.join(cache_dir, cache.CLIPS), exist_ok=True)
    jobs = [(clip, cache_dir, fps, crop_size) for clip in corpus.clips]
    with multiprocessing.get_context("spawn").Pool(max(1, min(workers, len(jobs)))) as pool:
        records = pool.map(_whole_frame_clip, jobs, chunksize=8)
    settings = {"corpus": "folder", "corpus_dir": os.path.abspath(corpus_dir),
                "sample_rate": 16000, "fps": fps, "crop_size": crop_size,
                "excited_as_happy": True, "marker_actor_side": "", "split_seed": 0,
                "face_detector": "none: whole frames", "fer_features": False}
    cache.write_index(cache_dir, corpus.classes, settings, records, [], corpus.dropped)


def _whole_frame_clip(job: tuple) -> dict:
    import cv2
    import numpy as np

    from avfbp_jax.data import cache, media

    clip, cache_dir, fps, size = job
    audio = media.read_audio(clip.audio, 16000)
    frames, _ = media.read_video(clip.video, fps)
    crops = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])
    name = cache.write_clip(cache_dir, clip.id, audio, crops, np.ones(len(crops), bool))
    return {**clip.record(), "file": name, "audio_len": len(audio), "num_frames": len(crops),
            "num_faces": len(crops)}


# ---------------------------------------------------------------------------- host
def section_host(plan: Plan, part: Part, *, work: str, commit: str) -> None:
    """Loader samples/s on this machine's cores over the corpus cache (one bucket: the step's
    input length, so each batch has the step benchmark's shapes), the bytes per sample of a
    real batch, and the host->device rate of such a batch."""
    import bench_loader
    import jax

    from avfbp_jax.data.cache import FeatureCache
    from avfbp_jax.train import parallel

    cache_dir = os.path.join(work, "cache")
    part.update(clips=len(FeatureCache(cache_dir)), threads=plan.loader_threads, rows=[])
    # The packed cache read into host memory (data.in_memory, the default) and memory-mapped
    # (a cache larger than memory; the page cache is warm after the first pass).
    for in_memory in (True, False):
        cache = FeatureCache(cache_dir, in_memory=in_memory)
        for b in plan.loader_batches:
            row = bench_loader.measure(cache, b, plan.loader_seconds, (plan.seconds,),
                                       threads=plan.loader_threads, prefetch=plan.loader_threads)
            part["rows"].append({**row, "in_memory": in_memory})
            part.save()
            print(f"  loader batch {b} (in_memory={in_memory}): {row['warm_samples_per_s']:.0f} "
                  f"samples/s warm, {row['bytes_per_sample']:.0f} bytes/sample", flush=True)
    # host -> device: one real batch of the largest size, put on the device and waited for
    from avfbp_jax.data.loader import TrainLoader

    b = max(plan.loader_batches)
    loader = TrainLoader(cache, range(len(cache)), b, seed=0, buckets=(plan.seconds,))
    batch = next(loader)
    loader.close()
    mesh = parallel.make_mesh(1)
    nbytes = sum(v.nbytes for v in batch.values())
    jax.block_until_ready(parallel.shard_batch(batch, mesh))  # warm-up
    times = []
    for _ in range(5):
        start = time.perf_counter()
        jax.block_until_ready(parallel.shard_batch(batch, mesh))
        times.append(time.perf_counter() - start)
    t = sorted(times)[len(times) // 2]
    part["h2d"] = {"batch": b, "bytes": nbytes, "median_s": t, "gb_per_s": nbytes / t / 1e9,
                   "samples_per_s": b / t}


# ---------------------------------------------------------------------------- e2e
def section_e2e(plan: Plan, part: Part, *, work: str, commit: str) -> None:
    """experiments/large_batch.py through train_and_evaluate for `e2e_steps` steps on the corpus
    cache (its inputs: 64x64 crops at 10 frames/s, one 4 s bucket; loader threads = cores;
    one evaluation at the end); samples/s from WORKDIR/metrics.json's "throughput"."""
    from avfbp_jax.data.cache import FeatureCache
    from avfbp_jax.data.loader import TrainLoader
    from avfbp_jax.train import loop
    from avfbp_jax.train.main import apply_overrides, load_config_file

    config = load_config_file(os.path.join(REPO, "experiments", "large_batch.py"))
    cache_dir = os.path.join(work, "cache")
    n = plan.e2e_steps
    overrides = [f"data.corpus_dir={os.path.join(work, 'corpus')}", f"data.cache_dir={cache_dir}",
                 f"data.buckets=({plan.seconds},)", "data.crop_size=64",
                 f"data.fps={plan.frames / plan.seconds}", "model.video.crop_size=64",
                 f"data.loader_threads={plan.loader_threads}",
                 f"data.prefetch={plan.loader_threads}",
                 f"train.batch_size={plan.e2e_batch}", f"train.eval_batch_size={plan.e2e_batch}",
                 f"train.num_steps={n}", f"train.eval_every={n}", f"train.checkpoint_every={n}",
                 f"train.log_every={max(1, n // 10)}", *plan.e2e_overrides]
    apply_overrides(config, [f"config.{o}" for o in overrides])
    part.update(experiment="experiments/large_batch.py", overrides=overrides, steps=n,
                batch=plan.e2e_batch, dtype=config.model.dtype, fusion=config.model.fusion)
    cache = FeatureCache(cache_dir)
    train = loop.split_of(cache, config.data, "train")
    plan0 = TrainLoader(cache, train, plan.e2e_batch, seed=0, buckets=(plan.seconds,)).plan(0)
    part["train_clips"] = len(train)
    part["padding_fraction"] = 1 - sum(real for *_, real in plan0) / (len(plan0) * plan.e2e_batch)
    part.save()
    workdir = os.path.join(work, "e2e")
    start = time.time()
    results = loop.train_and_evaluate(config, workdir)
    part["wall_s_run"] = time.time() - start
    metrics = _read_json(os.path.join(workdir, loop.METRICS_FILE))
    part["val_wa"] = results.get("val", {}).get("wa")
    part["test_wa"] = results.get("test", {}).get("wa")
    part["train_time_s"] = metrics.get("train_time_s")
    part["throughput"] = metrics["throughput"]  # compilation and evaluation excluded
    part["samples_per_s"] = metrics["throughput"]["samples_per_s"]


# ============================================================================ summary
def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """Cross-section numbers: the loader and the e2e run against the pure amfbp bf16 step."""
    s = result["sections"]
    rows = [r for r in s.get("train", {}).get("rows", [])
            if r.get("fits") and r["fbp_impl"] == "xla"]
    step = {(r["fusion"], r["dtype"], r["batch"]): r["samples_per_s"] for r in rows}
    amfbp16 = {b: v for (f, d, b), v in step.items() if (f, d) == ("amfbp", "bf16")}
    out: dict[str, Any] = {}
    host = s.get("host", {}).get("rows", [])
    if host and amfbp16:
        loader = max((r for r in host if r["in_memory"]), key=lambda r: r["batch_size"])
        b = loader["batch_size"]
        ref_b = b if b in amfbp16 else max(amfbp16, key=amfbp16.get)
        out["loader_vs_step"] = {
            "loader_batch": b, "loader_samples_per_s": loader["warm_samples_per_s"],
            "step_batch": ref_b, "step_samples_per_s": amfbp16[ref_b],
            "loader_over_step": loader["warm_samples_per_s"] / amfbp16[ref_b]}
    e2e = s.get("e2e", {})
    if e2e.get("samples_per_s") and amfbp16:
        b = e2e["batch"]
        ref_b = b if b in amfbp16 else max(amfbp16, key=amfbp16.get)
        out["e2e_vs_step"] = {"e2e_samples_per_s": e2e["samples_per_s"], "step_batch": ref_b,
                              "step_samples_per_s": amfbp16[ref_b],
                              "e2e_over_step": e2e["samples_per_s"] / amfbp16[ref_b]}
    return out


def _fmt(v: Any, spec: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec) if spec else str(v)


def _table(rows: list[dict[str, Any]], cols: list[tuple[str, str, str]]) -> list[str]:
    out = ["| " + " | ".join(h for _, h, _ in cols) + " |",
           "|" + "|".join("---" for _ in cols) + "|"]
    out += ["| " + " | ".join(_fmt(r.get(k), f) for k, _, f in cols) + " |" for r in rows]
    return out


def markdown(result: dict[str, Any]) -> str:
    """The README-ready tables: device, date, commit, then one table per section."""
    s = result["sections"]
    setup = s.get("setup", {})
    m = setup.get("machine", {})
    v = setup.get("versions", {})
    lines = [f"## Device suite{' (dry run, CPU)' if result['dry_run'] else ''}", "",
             f"{m.get('device_kind', '?')} x{m.get('devices', '?')} ({m.get('backend', '?')}), "
             f"{m.get('cpu_count', '?')} CPU cores ({m.get('cpu_model', '?')}); "
             f"{result['started_utc'][:10]}; commit {result['commit']}; jax {v.get('jax')}, "
             f"torch {v.get('torch')}, triton {v.get('triton')}; suite wall "
             f"{result.get('wall_s', 0):.0f} s.", ""]
    if setup.get("nvidia_smi"):
        lines += ["```", setup["nvidia_smi"], "```", ""]
    status = [{"section": "install", "status": result["install"]["status"],
               "wall_s": result["install"]["seconds"]}]
    status += [{"section": k, "status": p.get("status"), "wall_s": p.get("wall_s"),
                "budget_s": p.get("budget_s"), "errors": len(p.get("errors", []))}
               for k, p in s.items()]
    lines += _table(status, [("section", "section", ""), ("status", "status", ""),
                             ("wall_s", "wall s", ".0f"), ("budget_s", "budget s", ".0f"),
                             ("errors", "errors", "")]) + [""]
    t = s.get("pytest", {})
    if "counts" in t:
        c = t["counts"]
        bad = [n for n, x in t["tests"].items() if x["outcome"] in ("failed", "error")]
        lines += [f"`pytest -m gpu`: {c['passed']} passed, {c['failed']} failed, "
                  f"{c['error']} errors, {c['skipped']} skipped"
                  + (f"; failing: {', '.join(bad)}" if bad else "") + ".", ""]
    fbp = s.get("fbp", {}).get("result", {})
    if fbp.get("rows"):
        import bench_fbp

        lines += ["FBP kernel (tools/bench_fbp.py run_benchmark):", "",
                  bench_fbp.report(fbp, markdown=True), ""]
    tr = s.get("train", {})
    if tr.get("rows"):
        peaks = tr.get("gemm_peak_tflops", {})
        lines += [f"Train step, width {tr['width']}, {tr['seconds']:g} s audio + {tr['frames']} "
                  f"frames ({tr['frames'] / tr['seconds']:g} fps) per sample, one device; GEMM "
                  f"peak ({tr.get('gemm_size')}^3, same run) "
                  + ", ".join(f"{d} {p:.1f} TFLOP/s" for d, p in peaks.items())
                  + "; FLOPs from XLA's cost analysis of the compiled step:", ""]
        rows = [dict(r, device_gib=(r.get("device_bytes") or 0) / GIB or None,
                     peak_gib=(r.get("running_peak_bytes") or 0) / GIB or None)
                for r in tr["rows"]]
        lines += _table(rows, [("fusion", "fusion", ""), ("fbp_impl", "FBP", ""),
                               ("dtype", "dtype", ""),
                               ("batch", "batch", "d"), ("compile_s", "compile s", ".1f"),
                               ("ms", "ms/step", ".1f"), ("samples_per_s", "samples/s", ",.0f"),
                               ("gflop_per_sample", "GFLOP/sample", ".2f"),
                               ("tflops_per_s", "TFLOP/s", ".2f"),
                               ("pct_peak", "% peak", ".1f"),
                               ("device_gib", "XLA GiB", ".2f"),
                               ("peak_gib", "running peak GiB", ".2f")]) + [""]
        mx = [dict(x, key=k, fit=f"{x['fit_batches']}" if "fit_batches" in x else None,
                   per_mib=(x.get("bytes_per_sample") or 0) / 2**20 or None)
              for k, x in tr.get("max_batch", {}).items()]
        if mx:
            lines += ["Largest batch (memory_analysis line through two batches, predicted, "
                      "then compiled and run):", ""]
            lines += _table(mx, [("key", "fusion dtype", ""), ("found", "largest batch", ""),
                                 ("predicted", "predicted", ""), ("fit", "fit on", ""),
                                 ("per_mib", "MiB/sample", ".1f"),
                                 ("samples_per_s", "samples/s", ",.0f"),
                                 ("why", "note", "")]) + [""]
        if tr.get("skipped"):
            lines += ["Skipped for time: " + "; ".join(tr["skipped"]) + ".", ""]
    h = s.get("host", {})
    if h.get("rows"):
        lines += [f"Host: loader over {h['clips']} clips, {h['threads']} threads:", ""]
        lines += _table(h["rows"], [("in_memory", "in memory", ""), ("batch_size", "batch", "d"),
                                    ("warm_samples_per_s", "warm samples/s", ",.0f"),
                                    ("cold_batches_per_s", "cold batches/s", ".2f"),
                                    ("bytes_per_sample", "bytes/sample", ",.0f")]) + [""]
        if "h2d" in h:
            x = h["h2d"]
            lines += [f"Host->device: batch {x['batch']} ({x['bytes'] / 2**20:.1f} MiB) in "
                      f"{1e3 * x['median_s']:.1f} ms, {x['gb_per_s']:.2f} GB/s, "
                      f"{x['samples_per_s']:,.0f} samples/s. Bytes/sample by key: "
                      + ", ".join(f"{k} {n:,.0f} ({h['rows'][-1]['dtypes'][k]})" for k, n in
                                  h["rows"][-1]["bytes_per_sample_by_key"].items()) + ".", ""]
    summ = result.get("summary", {})
    if "loader_vs_step" in summ:
        x = summ["loader_vs_step"]
        lines += [f"Loader {x['loader_samples_per_s']:,.0f} samples/s (batch {x['loader_batch']})"
                  f" against the amfbp bf16 step's {x['step_samples_per_s']:,.0f} (batch "
                  f"{x['step_batch']}): {x['loader_over_step']:.2f}x.", ""]
    e = s.get("e2e", {})
    if e.get("samples_per_s"):
        c = s.get("corpus", {})
        line = (f"End to end: {e['experiment']}, {e['steps']} steps of batch {e['batch']} "
                f"({e['dtype']}), {e['train_clips']} train clips (padding "
                f"{100 * e['padding_fraction']:.1f}% of rows): {e['samples_per_s']:,.0f} samples/s "
                f"(metrics.json throughput: compilation and evaluation excluded, waits for the "
                f"loader included; {_fmt(e['throughput'].get('utilization'), '.1%')} of "
                f"{_fmt(e['throughput'].get('peak_tflops_per_device'), '.3g')} TFLOP/s, "
                f"{e['throughput'].get('peak_source')})")
        if "e2e_vs_step" in summ:
            x = summ["e2e_vs_step"]
            line += (f", {x['e2e_over_step']:.2f}x the pure amfbp bf16 step at batch "
                     f"{x['step_batch']} ({x['step_samples_per_s']:,.0f})")
        line += f"; val WA {_fmt(e.get('val_wa'), '.3f')}, test WA {_fmt(e.get('test_wa'), '.3f')}."
        if c.get("synth_s"):
            line += (f" Corpus: {c['clips']} clips synthesised in {c['synth_s']:.0f} s and "
                     f"prepared in {_fmt(c.get('prepare_s'), '.0f')} s with {c['workers']} "
                     "workers (in the background of the timed sections).")
        lines += [line, ""]
    return "\n".join(lines)
