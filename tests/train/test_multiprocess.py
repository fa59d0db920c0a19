"""Real multi-process training over localhost: 2 processes x 4 CPU devices (gloo collectives)
give the per-step losses and final parameters of 1 process x 8 devices with the same batch."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from avfbp_jax.train import checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow  # three training processes
def test_two_processes_match_one(tmp_path, tiny_cache):
    config_file = tmp_path / "sgd_experiment.py"
    config_file.write_text(
        "import sys\n"
        f"sys.path.insert(0, {REPO!r})\n"
        "from tests.train.conftest import tiny_run_config\n\n\n"
        "def get_config():\n"
        f"    c = tiny_run_config({tiny_cache!r}, 'gfbp')\n"
        "    c.train.optimizer = 'sgd'  # plain updates: rounding is not amplified\n"
        "    return c\n")
    train = ["train", "--config", str(config_file)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "AVFBP_"))}
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    one = subprocess.run([sys.executable, "-m", "avfbp_jax.cli", *train, "--workdir",
                          str(tmp_path / "one")], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "avfbp_jax.cli", "launch", "-n", "2",
                          "--cpu-devices", "4", "--", *train, "--workdir", str(tmp_path / "two")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]

    def results(name):
        with open(tmp_path / name / "history.json") as f:
            losses = [v for _, v in json.load(f)["train/loss"]]
        with open(tmp_path / name / "metrics.json") as f:
            metrics = json.load(f)
        params, _ = checkpoint.load_for_inference(str(tmp_path / name), 6)
        return losses, metrics, params

    losses_1, metrics_1, params_1 = results("one")
    losses_2, metrics_2, params_2 = results("two")
    assert len(losses_1) == 6 and metrics_2["num_devices"] == 8
    np.testing.assert_allclose(losses_2, losses_1, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(params_1), jax.tree.leaves(params_2), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
    for split in ("val", "test"):  # evaluation sees the same predictions on every process
        assert metrics_2[split]["confusion"] == metrics_1[split]["confusion"]
