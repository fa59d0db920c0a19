"""Whole runs in subprocesses: SIGKILL + restart is bitwise identical to an uninterrupted run,
a kill during an async save leaves nothing the next start chokes on, and a checkpoint written
on 8 devices continues on 1.

All runs share a persistent compilation cache so that only the first one compiles (fixtures
`runner` and `uninterrupted` in conftest.py).
"""

import os
import re
import shutil
import signal

import jax
import numpy as np
import pytest

from avfbp_jax.train import checkpoint

# Each test starts 1-3 training subprocesses (20-60 s each on an idle 2-core CPU).
pytestmark = pytest.mark.slow


def _params(workdir, step):
    return checkpoint.load_for_inference(str(workdir), step)[0]


def _assert_bitwise_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(la, lb, strict=True):
        np.testing.assert_array_equal(x, y)


def test_sigkill_and_restart_is_bitwise_identical(runner, uninterrupted):
    root, run = runner
    workdir = root / "killed"
    # Step 4 is a checkpoint step: the kill lands while its async save may still be writing.
    first = run(workdir, "train.kill_at_step=4")
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    ckpt_dir = workdir / "checkpoints"
    assert not (ckpt_dir / "6").exists()
    second = run(workdir, "train.kill_at_step=5")  # resumes, then dies at a non-save step
    assert second.returncode == -signal.SIGKILL, second.stderr[-3000:]
    assert "steps 0..6" not in second.stdout  # it resumed rather than starting over
    third = run(workdir)
    assert third.returncode == 0, third.stderr[-3000:]
    start = int(re.search(r"steps (\d+)\.\.6", third.stdout).group(1))
    assert 2 <= start <= 4, third.stdout
    # No temporary (incomplete) checkpoint directories survive a restart.
    assert all(name.isdigit() for name in os.listdir(ckpt_dir)), os.listdir(ckpt_dir)
    _assert_bitwise_equal(_params(uninterrupted, 6), _params(workdir, 6))


def test_incomplete_checkpoint_is_ignored_and_cleaned(runner, uninterrupted):
    """A checkpoint directory left mid-write (Orbax's tmp name) is never restored."""
    root, run = runner
    workdir = root / "partial"
    shutil.copytree(uninterrupted, workdir)
    ckpt_dir = workdir / "checkpoints"
    shutil.rmtree(ckpt_dir / "6")
    partial = ckpt_dir / "6.orbax-checkpoint-tmp-1234567"
    shutil.copytree(ckpt_dir / "4", partial)
    shutil.rmtree(partial / "state")  # truncated: the state item never finished
    proc = run(workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "steps 4..6" in proc.stdout, proc.stdout
    assert not partial.exists()
    _assert_bitwise_equal(_params(uninterrupted, 6), _params(workdir, 6))


def test_restore_on_a_different_device_count(runner, uninterrupted):
    """Continue an 8-device run on 1 device and on 8: same parameters to float tolerance."""
    root, run = runner
    results = {}
    for devices in (1, 8):
        workdir = root / f"continue_{devices}"
        shutil.copytree(uninterrupted, workdir)
        proc = run(workdir, "train.num_steps=8", devices=devices)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f"over {devices} device(s), steps 6..8" in proc.stdout, proc.stdout
        results[devices] = _params(workdir, 8)
    for x, y in zip(jax.tree.leaves(results[1]), jax.tree.leaves(results[8]), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)
    moved = [not np.array_equal(x, y) for x, y in
             zip(jax.tree.leaves(results[1]), jax.tree.leaves(_params(uninterrupted, 6)),
                 strict=True)]
    assert any(moved)


def test_resume_with_other_settings_is_refused(runner, uninterrupted):
    """Restarting a workdir under another model setting stops with one line; nothing changes."""
    root, run = runner
    workdir = root / "other_settings"
    shutil.copytree(uninterrupted, workdir)
    before = (workdir / "config.json").read_text()
    proc = run(workdir, "model.fbp_dropout=0.5", "train.num_steps=8")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "avfbp train: error:" in proc.stderr and "model.fbp_dropout: 0.1 -> 0.5" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (workdir / "config.json").read_text() == before
    assert sorted(os.listdir(workdir / "checkpoints")) == sorted(os.listdir(uninterrupted /
                                                                            "checkpoints"))
