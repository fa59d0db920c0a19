"""Every tool runs as a module of the tools package from the repository root."""

import subprocess
import sys

from tools import REPO

TOOLS = ("bench_fbp", "bench_train", "forward_time", "device_suite", "run_table",
         "synthetic_proxy")


def test_every_tool_runs_as_a_module():
    for name in TOOLS:
        proc = subprocess.run([sys.executable, "-m", f"tools.{name}", "--help"], cwd=REPO,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, (name, proc.stderr[-2000:])
        assert proc.stdout.startswith("usage:"), name
