"""Multi-process start settings: config over environment, one-line errors for bad settings."""

import os
import subprocess
import sys

import pytest

from avfbp_jax.train import parallel
from avfbp_jax.train.config import RunSetupError, train_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_settings_come_from_config_then_environment(monkeypatch):
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
    monkeypatch.setenv("JAX_PROCESS_ID", "3")
    c = train_config()
    assert parallel.distributed_settings(c) == {
        "coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3}
    c.coordinator_address, c.num_processes, c.process_id = "host:99", 2, 0
    assert parallel.distributed_settings(c) == {
        "coordinator_address": "host:99", "num_processes": 2, "process_id": 0}
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name)
    assert parallel.distributed_settings(train_config()) == {
        "coordinator_address": None, "num_processes": None, "process_id": None}


def test_bad_settings_are_refused(monkeypatch):
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(RunSetupError, match="JAX_NUM_PROCESSES='two' is not an integer"):
        parallel.distributed_settings(train_config())
    c = train_config()
    c.num_processes, c.process_id = 2, 2
    with pytest.raises(RunSetupError, match=r"process_id=2 is outside 0..1"):
        parallel.distributed_settings(c)


@pytest.mark.slow  # a subprocess that starts jax
def test_incomplete_start_is_one_line_without_traceback(tmp_path):
    """The start the README used to document: the coordinator address alone, no cluster."""
    env = {"PATH": os.environ["PATH"], "AVFBP_DIST": "1", "JAX_PLATFORMS": "cpu",
           "JAX_COORDINATOR_ADDRESS": "127.0.0.1:1"}
    proc = subprocess.run(
        [sys.executable, "-m", "avfbp_jax.commands.cli", "train", "--config",
         os.path.join(REPO, "experiments", "synthetic.py"), "--workdir", str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert lines[0].startswith("avfbp train: error: multi-process start: ")
    assert "num_processes, process_id" in lines[0] and "avfbp launch" in lines[0]
    assert not os.listdir(tmp_path)  # nothing was prepared or written
