"""Real multi-process training over localhost: processes with 4 fake CPU devices each, jax's gloo
CPU collectives between them. Two processes give the losses and parameters of one process with
the same global batch, with either FBP kernel; a process that dies stops the others in bounded
time; restarting all of them resumes exactly."""

import json
import os
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from avfbp_jax import export
from avfbp_jax.commands import launch
from avfbp_jax.train import checkpoint
from avfbp_jax.train.evaluation import evaluate_checkpoint
from avfbp_jax.train.metric_writers import read_history

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def sgd_run(tmp_path_factory, tiny_cache):
    """run(workdir, *cli args, processes=2) over an 8-step SGD config of the tiny corpus."""
    root = tmp_path_factory.mktemp("multiprocess")
    config_file = root / "sgd_experiment.py"
    config_file.write_text(
        "import sys\n"
        f"sys.path.insert(0, {REPO!r})\n"
        "from tests.train.conftest import tiny_run_config\n\n\n"
        "def get_config():\n"
        f"    c = tiny_run_config({tiny_cache!r}, 'gfbp')\n"
        "    c.train.optimizer = 'sgd'  # plain updates: rounding is not amplified\n"
        "    c.train.num_steps = 8\n"
        "    c.train.heartbeat_timeout_s = 5\n"
        "    return c\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "AVFBP_"))}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8")

    def command(workdir, *args):
        return ["train", "--config", str(config_file), "--workdir", str(root / workdir), *args]

    def run(workdir, *args, processes=2):
        launcher = ["launch", "-n", str(processes), "--cpu-devices", "4", "--"]
        cmd = [sys.executable, "-m", "avfbp_jax.commands.cli",
               *(launcher if processes > 1 else []), *command(workdir, *args)]
        return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=600)

    return root, run, command, env


def final_params(workdir):
    params, _ = checkpoint.load_for_inference(str(workdir), 8)
    return jax.tree.leaves(params)


# model.fbp_impl "pallas" runs the kernel per device (ops.device_rows); without FBP dropout,
# whose hash mask differs from XLA's jax.random one.
FBP_IMPL_ARGS = {"xla": (),
                 "pallas": ("--config.model.fbp_impl=pallas", "--config.model.fbp_dropout=0.0")}


@pytest.mark.slow  # training processes
@pytest.mark.parametrize("fbp_impl", list(FBP_IMPL_ARGS))
def test_two_processes_match_one(sgd_run, fbp_impl):
    root, run, _, _ = sgd_run
    tag = "" if fbp_impl == "xla" else f"_{fbp_impl}"
    one, two = f"one{tag}", f"two{tag}"
    for name, processes in ((one, 1), (two, 2)):
        proc = run(name, *FBP_IMPL_ARGS[fbp_impl], processes=processes)
        assert proc.returncode == 0, proc.stderr[-3000:]

    def results(name):
        losses = [v for _, v in read_history(str(root / name / "history.jsonl"))["train/loss"]]
        with open(root / name / "metrics.json") as f:
            return losses, json.load(f)

    (losses_1, metrics_1), (losses_2, metrics_2) = results(one), results(two)
    assert len(losses_1) == 8 and metrics_2["num_devices"] == 8
    np.testing.assert_allclose(losses_2, losses_1, rtol=1e-5, atol=1e-5)
    for a, b in zip(final_params(root / one), final_params(root / two), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
    for split in ("val", "test"):  # evaluation sees the same predictions on every process
        assert metrics_2[split]["confusion"] == metrics_1[split]["confusion"]
    if fbp_impl != "xla":
        return
    # The multi-process checkpoint serves evaluate and export like any other.
    assert evaluate_checkpoint(str(root / two), 8, "test")["confusion"] == (
        metrics_2["test"]["confusion"])
    export.export_checkpoint(str(root / two / "checkpoints" / "8"), str(root / "bundle"))
    with ocp.StandardCheckpointer() as c:
        bundled = jax.tree.leaves(c.restore(str(root / "bundle" / "params")))
    for a, b in zip(final_params(root / two), bundled, strict=True):
        np.testing.assert_array_equal(b, a)


@pytest.mark.slow  # training processes
def test_a_dead_process_stops_the_other_and_all_resume_exactly(sgd_run):
    """No launcher: process 1 is SIGKILLed after step 5; jax's coordination service stops
    process 0 within the heartbeat timeout. Restarting both resumes to the same parameters,
    bit for bit, as the uninterrupted two-process run."""
    root, run, command, env = sgd_run
    if not (root / "two" / "metrics.json").exists():
        assert run("two").returncode == 0
    port = launch.free_port()
    procs = []
    for index, extra in ((0, []), (1, ["--config.train.kill_at_step=5"])):
        process_env = dict(env, AVFBP_DIST="1", JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                           JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(index),
                           XLA_FLAGS="--xla_force_host_platform_device_count=4")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "avfbp_jax.commands.cli", *command("killed", *extra)], cwd=REPO,
            env=process_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    assert procs[1].wait(timeout=600) == -9
    died = time.monotonic()
    _, stderr = procs[0].communicate(timeout=120)
    assert procs[0].returncode != 0 and time.monotonic() - died < 60, stderr[-2000:]
    assert "another task died" in stderr  # jax's own message: a bounded, explained stop
    resumed = run("killed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for a, b in zip(final_params(root / "two"), final_params(root / "killed"), strict=True):
        np.testing.assert_array_equal(b, a)
