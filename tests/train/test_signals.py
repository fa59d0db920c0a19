"""Real signals to whole training runs in subprocesses: SIGTERM stops at a step boundary, saves
that step, prints one line and exits 143; the rerun loses no step and ends bitwise equal to an
uninterrupted run. With two processes, a SIGTERM to one of them stops both at the same step.

The signal is sent once the run has printed its "training ... steps 0..6" line (the step loop is
about to start): however long the machine takes after that, the run is inside its step loop.
"""

import os
import re
import signal
import subprocess
import sys

import pytest

from avfbp_jax.train.metric_writers import read_history
from tests.train.conftest import REPO
from tests.train.test_resume import _assert_bitwise_equal, _params

pytestmark = pytest.mark.slow

STOPPED = re.compile(r"^avfbp train: interrupted at step (\d+); checkpoint saved; run the same "
                     r"command to resume$", re.M)


def _start(cmd, env, stderr_path):
    """Starts a run and returns it once it has printed the line that starts its step loop."""
    with open(stderr_path, "w") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=err,
                                text=True)
    for line in proc.stdout:
        if re.search(r"steps \d+\.\.\d+", line):
            return proc
    proc.wait()
    raise AssertionError(f"the run ended before its step loop: {stderr_path.read_text()[-3000:]}")


def test_sigterm_saves_the_step_and_the_rerun_loses_none(train_cli, runner, uninterrupted):
    root, command = train_cli
    workdir = root / "sigterm"
    proc = _start(*command(workdir), root / "sigterm.err")
    proc.send_signal(signal.SIGTERM)
    proc.stdout.read()
    assert proc.wait(timeout=300) == 128 + signal.SIGTERM
    err = (root / "sigterm.err").read_text()
    assert "Traceback" not in err and len(STOPPED.findall(err)) == 1, err[-3000:]
    step = int(STOPPED.search(err).group(1))
    assert 1 <= step <= 6
    assert (workdir / "checkpoints" / str(step)).is_dir()  # the step it stopped at is saved
    assert read_history(str(workdir / "history.jsonl"))["train/loss"][-1][0] == step

    _, run = runner
    rerun = run(workdir)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"steps {step}..6" in rerun.stdout  # it resumed at the step it stopped at
    _assert_bitwise_equal(_params(uninterrupted, 6), _params(workdir, 6))


def test_two_processes_stop_at_the_same_step(tmp_path, tiny_cache):
    """SIGTERM to one of two processes (a preempted host): both stop at the same step, save it
    together and exit 143; the same command continues from that step to the end."""
    config_file = tmp_path / "experiment.py"
    config_file.write_text(
        "import sys\n"
        f"sys.path.insert(0, {REPO!r})\n"
        "from tests.train.conftest import tiny_run_config\n\n\n"
        "def get_config():\n"
        f"    return tiny_run_config({tiny_cache!r}, 'gfbp')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "AVFBP_"))}
    env["JAX_PLATFORMS"] = "cpu"
    cmd = [sys.executable, "-m", "avfbp_jax.commands.cli", "launch", "-n", "2", "--cpu-devices",
           "4", "--", "train", "--config", str(config_file), "--workdir", str(tmp_path / "run")]
    launcher = _start(cmd, env, tmp_path / "first.err")
    with open(f"/proc/{launcher.pid}/task/{launcher.pid}/children") as f:
        children = [int(pid) for pid in f.read().split()]
    assert len(children) == 2
    os.kill(children[1], signal.SIGTERM)  # not the process that prints
    launcher.stdout.read()
    assert launcher.wait(timeout=300) == 128 + signal.SIGTERM
    err = (tmp_path / "first.err").read_text()
    steps = {int(s) for s in STOPPED.findall(err)}
    assert len(STOPPED.findall(err)) == 2 and len(steps) == 1, err[-3000:]
    assert "Traceback" not in err
    step = steps.pop()
    assert (tmp_path / "run" / "checkpoints" / str(step)).is_dir()

    rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"steps {step}..6" in rerun.stdout
    history = read_history(str(tmp_path / "run" / "history.jsonl"))
    assert [s for s, _ in history["train/loss"]] == [1, 2, 3, 4, 5, 6]  # no step lost
