"""One section of the device suite, in the process that `device_suite.py --section` starts: its
results (`Part`, saved to a JSON part file after every case), its deadline, and `run_section`,
which runs the section's module (`run(plan, part, *, work, commit)`) and records what it raised.
"""

from __future__ import annotations

import importlib
import json
import os
import time
from typing import Any

from avfbp_jax import atomic
from tools.device.plan import Plan

# section -> module of tools.device that runs it
MODULES = {"setup": "machine", "pytest": "gpu_tests", "fbp": "fbp", "fusion": "fusion",
           "train": "train_step", "twin": "twin", "corpus": "corpus", "host": "host",
           "e2e": "e2e"}


class Part(dict):
    """A section's results, written to its part file at every save() (and errors recorded)."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def save(self) -> None:
        atomic.write_json(self.path, dict(self), default=float)

    def error(self, where: str, exc: BaseException) -> None:
        self.setdefault("errors", []).append(f"{where}: {type(exc).__name__}: {str(exc)[:800]}")
        print(f"ERROR {where}: {type(exc).__name__}: {str(exc)[:800]}", flush=True)
        self.save()


def time_left() -> float:
    """Seconds to this section's deadline (SUITE_DEADLINE, set by the driver)."""
    return float(os.environ.get("SUITE_DEADLINE", "inf")) - time.time()


def read_json(path: str) -> dict[str, Any]:
    """The JSON object in path, or {} where there is none (a section that wrote nothing)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def run_section(name: str, plan_file: str, part_file: str) -> int:
    """Runs one section (in the process device_suite.py --section starts); 0 unless it raised."""
    with open(plan_file) as f:
        raw = json.load(f)
    work, commit = raw.pop("work"), raw.pop("commit")
    plan = Plan(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
    part = Part(part_file)
    try:
        module = importlib.import_module(f"tools.device.{MODULES[name]}")
        module.run(plan, part, work=work, commit=commit)
    except BaseException as e:  # noqa: BLE001 - recorded in the JSON, the suite goes on
        part.error(name, e)
        return 1
    part.save()
    return 0
