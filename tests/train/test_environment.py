"""environment.json: package versions, the git commit of a source checkout, devices."""

import json
import os
import subprocess

import jax

import avfbp_jax
from avfbp_jax.train import environment


def test_write_environment(tmp_path):
    info = environment.write_environment(str(tmp_path))
    with open(tmp_path / environment.ENVIRONMENT_FILE) as f:
        assert json.load(f) == info
    assert info["versions"]["jax"] == jax.__version__
    assert info["versions"]["avfbp_jax"] == avfbp_jax.__version__
    assert info["devices"]["count"] == jax.device_count() and info["cpu_count"] >= 1


def test_git_commit_of_the_source_checkout_or_unknown(monkeypatch, tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(avfbp_jax.__file__)))
    head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True,
                          text=True)
    state = environment.git_state()
    if head.returncode == 0:  # the tests run from a checkout (else there is nothing to match)
        assert state["git_commit"] == head.stdout.strip()
        assert isinstance(state["git_dirty"], bool)
    fake = tmp_path / "site-packages" / "avfbp_jax" / "train"  # an installed copy, no checkout
    fake.mkdir(parents=True)
    monkeypatch.setattr(environment, "__file__", str(fake / "environment.py"))
    assert environment.git_state() == {"git_commit": "unknown", "git_dirty": None}
