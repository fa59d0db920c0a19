"""Shared tiny configs, a tiny corpus and whole-run subprocess fixtures for the training tests."""

import os
import subprocess
import sys

import ml_collections
import pytest

from avfbp_jax.models.config import tiny_model_config
from avfbp_jax.train.presets import tiny_config


def tiny_train_config() -> ml_collections.ConfigDict:
    return tiny_config().train


@pytest.fixture
def tiny_model():
    return tiny_model_config()


def tiny_corpus(root) -> tuple[str, str]:
    """A 16-clip synthetic corpus (1-1.5 s clips) and its prepared cache under root."""
    import dataclasses
    import os

    from avfbp_jax.data import prepare, synthetic
    from avfbp_jax.data.config import data_config

    corpus, cache = os.path.join(root, "corpus"), os.path.join(root, "cache")
    cues = dataclasses.replace(synthetic.Cues(), min_seconds=1.0, max_seconds=1.5)
    synthetic.write_corpus(corpus, clips=16, seed=0, cues=cues, workers=1)
    assert prepare.prepare_cache(corpus, cache, data_config())["records"]
    return corpus, cache


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> str:
    return tiny_corpus(str(tmp_path_factory.mktemp("tiny_corpus")))[1]


def tiny_run_config(cache_dir: str, fusion: str = "amfbp") -> ml_collections.ConfigDict:
    """A whole run config over the tiny cache: one bucket, 8-row batches, a few steps."""
    from avfbp_jax.train.presets import base_config

    c = base_config()
    c.model = tiny_model_config(fusion)
    c.data.cache_dir = cache_dir
    c.data.corpus_dir = ""
    c.data.buckets = (1.5,)
    c.train = tiny_train_config()
    c.train.num_steps = 6
    c.train.log_every = 1
    c.train.eval_every = 3
    c.train.checkpoint_every = 2
    return c


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="session")
def train_cli(tmp_path_factory, tiny_cache):
    """(root, command): command(workdir, *overrides, devices=8) gives the argv and environment of
    a whole `avfbp train` run of the tiny experiment (a shared persistent compilation cache)."""
    root = tmp_path_factory.mktemp("resume")
    config_file = root / "tiny_experiment.py"
    config_file.write_text(
        "import sys\n"
        f"sys.path.insert(0, {REPO!r})\n"
        "from tests.train.conftest import tiny_run_config\n\n\n"
        "def get_config():\n"
        f"    return tiny_run_config({tiny_cache!r}, 'gfbp')\n"
    )
    cache_dir = str(root / "jax_cache")

    def command(workdir, *overrides, devices=8):
        env = dict(os.environ)
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
        env["JAX_PLATFORMS"] = "cpu"
        env["JAX_COMPILATION_CACHE_DIR"] = cache_dir
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
        env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
        cmd = [sys.executable, "-m", "avfbp_jax.commands.cli", "train", "--config",
               str(config_file), "--workdir", str(workdir), *[f"--config.{o}" for o in overrides]]
        return cmd, env

    return root, command


@pytest.fixture(scope="session")
def runner(train_cli):
    root, command = train_cli

    def run(workdir, *overrides, devices=8):
        cmd, env = command(workdir, *overrides, devices=devices)
        return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=600)

    return root, run


@pytest.fixture(scope="session")
def uninterrupted(runner):
    root, run = runner
    workdir = root / "uninterrupted"
    proc = run(workdir, "train.profile_steps=2,3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir
