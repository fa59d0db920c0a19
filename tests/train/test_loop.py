"""Whole-run behaviour: outputs in the workdir, evaluate, non-finite stop, init_from + frozen."""

import glob
import json
import os
import shutil

import jax
import numpy as np
import pytest

from avfbp_jax import export
from avfbp_jax.data.cache import read_index
from avfbp_jax.train import checkpoint
from avfbp_jax.train.config import RunSetupError
from avfbp_jax.train.evaluation import evaluate_checkpoint
from avfbp_jax.train.loop import train_and_evaluate
from avfbp_jax.train.metric_writers import read_history
from tests.train.conftest import tiny_run_config


def test_workdir_outputs(uninterrupted):
    names = set(os.listdir(uninterrupted))
    assert {"config.json", "metrics.json", "confusion.png", "curves.png", "tb",
            "checkpoints", "history.jsonl", "train.log", "environment.json"} <= names
    with open(uninterrupted / "metrics.json") as f:
        m = json.load(f)
    assert m["step"] == 6 and m["num_devices"] == 8 and m["fusion"] == "gfbp"
    for split, n in (("val", 4), ("test", 4)):
        assert m[split]["num_examples"] == n
        assert np.sum(m[split]["confusion"]) == n
        assert 0 <= m[split]["wa"] <= 1 and 0 <= m[split]["ua"] <= 1
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(uninterrupted / "tb"))
    history = read_history(str(uninterrupted / "history.jsonl"))
    assert [s for s, _ in history["train/loss"]] == [1, 2, 3, 4, 5, 6]
    assert [s for s, _ in history["val/ua"]] == [3, 6]
    # Throughput: windows without compilation are measured (step 1 compiles; steps 4 and 6
    # follow evaluations or saves, which restart the window).
    assert all(v > 0 for _, v in history["perf/samples_per_s"])
    t = m["throughput"]
    assert t["measured_steps"] >= 3 and t["global_batch"] == 8 and t["compile_s"] > 0
    assert t["samples_per_s"] == pytest.approx(8 * t["steps_per_s"])
    assert t["step_tflop"] > 0 and 0 < t["utilization"] < 1
    assert t["peak_source"] == "measured float32 GEMM on cpu"
    assert glob.glob(str(uninterrupted / "profile" / "**" / "*.xplane.pb"), recursive=True)
    # Keep-latest-2 plus keep-best: steps 4 and 6, and 3 if it had the better val UA.
    steps = sorted(int(s) for s in os.listdir(uninterrupted / "checkpoints") if s.isdigit())
    best = 3 if history["val/ua"][0][1] > history["val/ua"][1][1] else 6
    assert steps == sorted({4, 6, best})
    assert checkpoint.resolve_step(str(uninterrupted)) == best
    # metrics.json: the last step at the top level (as before) and the checkpoint that export
    # and evaluate load under "best".
    assert m["best_step"] == best and m["best"]["step"] == best
    assert {"val", "test"} <= set(m["best"])
    if best == 6:
        assert m["best"]["val"] == m["val"] and m["best"]["test"] == m["test"]
    with open(uninterrupted / "environment.json") as f:
        env = json.load(f)
    assert env["versions"]["jax"] == jax.__version__ and env["git_commit"]
    assert env["devices"]["count"] == 8
    with open(uninterrupted / "config.json") as f:
        assert json.load(f)["model"]["fusion"] == "gfbp"
    with open(uninterrupted / "classes.json") as f:
        classes = json.load(f)
    config = checkpoint.load_config(str(uninterrupted))
    assert classes == read_index(config.data.cache_dir)["classes"] and len(classes) >= 2
    assert checkpoint.load_classes(str(uninterrupted / "checkpoints" / "4")) == classes


def test_export_needs_no_cache(uninterrupted, tmp_path):
    """The class names come from the workdir: a run whose cache is gone still exports."""
    workdir = tmp_path / "run"
    shutil.copytree(uninterrupted, workdir)
    config = json.loads((workdir / "config.json").read_text())
    config["data"]["cache_dir"] = str(tmp_path / "deleted_cache")
    (workdir / "config.json").write_text(json.dumps(config))
    meta = export.export_checkpoint(str(workdir), str(tmp_path / "bundle"))
    assert meta["labels"] == json.loads((workdir / "classes.json").read_text())


def test_evaluate_reproduces_final_metrics(uninterrupted):
    with open(uninterrupted / "metrics.json") as f:
        final = json.load(f)["val"]
    result = evaluate_checkpoint(str(uninterrupted), 6, "val")
    assert result["confusion"] == final["confusion"]
    assert result["ua"] == final["ua"] and result["wa"] == final["wa"]
    assert os.path.exists(uninterrupted / "eval" / "val-step6.json")
    assert os.path.exists(uninterrupted / "eval" / "val-step6.png")
    # By default evaluate loads the checkpoint that metrics.json reports as "best".
    best = evaluate_checkpoint(str(uninterrupted), None, "test")
    with open(uninterrupted / "metrics.json") as f:
        reported = json.load(f)["best"]
    assert best["step"] == reported["step"]
    assert best["confusion"] == reported["test"]["confusion"]
    assert best["ua"] == reported["test"]["ua"]
    # Without a modality: its own files, and the model sees less (its loss moves).
    for modality in ("audio", "faces"):
        partial = evaluate_checkpoint(str(uninterrupted), 6, "val", without=modality)
        assert partial["loss"] != result["loss"]
        assert np.sum(partial["confusion"]) == np.sum(result["confusion"])
        assert os.path.exists(uninterrupted / "eval" / f"val-step6-without-{modality}.json")


def test_load_for_inference_from_step_directory(uninterrupted):
    by_dir, config = checkpoint.load_for_inference(str(uninterrupted / "checkpoints" / "4"))
    by_step, _ = checkpoint.load_for_inference(str(uninterrupted), 4)
    assert config.model.fusion == "gfbp"
    assert isinstance(jax.tree.leaves(by_dir)[0], np.ndarray)
    for x, y in zip(jax.tree.leaves(by_dir), jax.tree.leaves(by_step), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.slow  # a training subprocess
def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(runner):
    root, run = runner
    workdir = root / "diverge"
    proc = run(workdir, "train.learning_rate=1e30", "train.grad_clip_norm=0.0",
               "train.checkpoint_every=1")
    assert proc.returncode == 3, proc.stderr[-3000:]
    # Step 1 has learning rate 0 (warmup); step 2's huge update makes step 3 overflow.
    assert "avfbp train: error: training became non-finite at step 3" in proc.stderr, proc.stderr
    assert "last good checkpoint is step 2" in proc.stderr
    assert sorted(os.listdir(workdir / "checkpoints")) == ["1", "2"]
    params, _ = checkpoint.load_for_inference(str(workdir))
    assert all(np.all(np.isfinite(p)) for p in jax.tree.leaves(params))


@pytest.mark.slow  # a training subprocess
def test_init_from_copies_and_freezes_the_audio_stream(runner, uninterrupted):
    root, run = runner
    workdir = root / "init_from"
    compile_cache = root / "compile_cache"  # train.compilation_cache_dir, not the runner's env
    proc = run(workdir, f"train.init_from={uninterrupted}", "train.frozen=audio",
               "train.num_steps=2", "train.eval_every=2",
               f"train.compilation_cache_dir={compile_cache}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert os.listdir(compile_cache)  # the step and eval executables were cached there
    source, _ = checkpoint.load_for_inference(str(uninterrupted))
    params, config = checkpoint.load_for_inference(str(workdir))
    assert tuple(config.train.frozen) == ("audio",)
    for x, y in zip(jax.tree.leaves(source["audio"]), jax.tree.leaves(params["audio"]),
                    strict=True):
        np.testing.assert_array_equal(x, y)
    fusion_same = [np.array_equal(x, y) for x, y in zip(
        jax.tree.leaves(source["fusion"]), jax.tree.leaves(params["fusion"]), strict=True)]
    assert not all(fusion_same)


def test_missing_init_sources_are_one_line_errors(tiny_cache, tmp_path):
    """A train.init_from or audio.init_weights that is not there stops the run with one line."""
    config = tiny_run_config(tiny_cache, "audio")
    config.train.init_from = str(tmp_path / "no_run")
    with pytest.raises(RunSetupError, match=r"^config.train.init_from: .*no_run: neither a "
                                            r"workdir") as e:
        train_and_evaluate(config, str(tmp_path / "a"))
    assert "\n" not in str(e.value)
    config = tiny_run_config(tiny_cache, "audio")
    config.model.audio.init_weights = str(tmp_path / "no_weights")
    with pytest.raises(RunSetupError, match=r"no converted AlexNet weights in .*no_weights.*"
                                            r"alexnet_convert"):
        train_and_evaluate(config, str(tmp_path / "b"))
