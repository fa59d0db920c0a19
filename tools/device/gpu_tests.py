"""Device suite section "pytest": `pytest -m gpu` over tests/ with every platform visible, and
per-test outcomes from its JUnit XML."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from typing import Any

from tools import REPO
from tools.device.part import Part, time_left
from tools.device.plan import Plan


def run(plan: Plan, part: Part, *, work: str, commit: str) -> None:
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
