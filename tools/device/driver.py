"""The device suite's driver (the parent process): installs the carried wheels, then runs each
section in its own Python process with its own time budget, so that a crash, an out-of-memory
error or a hang in one section is recorded and the next one still runs, and each section starts
with the whole device memory (JAX preallocates per process; the FBP section shares the GPU with
PyTorch). It imports nothing from the wheels: only the sections' processes see them.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from avfbp_jax import atomic
from tools import REPO
from tools.device.part import read_json
from tools.device.plan import SECTIONS, Plan
from tools.device.tables import markdown, summarize


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
    atomic.write_json(plan_file, {**dataclasses.asdict(plan), "work": work, "commit": commit})

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
    result["wall_s"] = time.time() - t0
    result["summary"] = summarize(result)
    result["markdown"] = markdown(result)
    atomic.write_json(os.path.join(out_dir, "suite.json"), result, default=float)
    atomic.write_text(os.path.join(out_dir, "suite.md"), result["markdown"])


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
        cmd = [sys.executable, "-m", "tools.device_suite", "--section", name, "--plan",
               plan_file, "--part", self.part]
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
        part = read_json(self.part)
        end = getattr(self, "end", time.time())
        part.update(status=status, wall_s=end - self.start, budget_s=self.budget)
        if status != "ok":
            part["output_tail"] = self.tail
        return part


def _utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
