"""check_same_run: a workdir resumes (or is reused) only under the settings it was trained with."""

import json

import pytest

from avfbp_jax.train import checkpoint
from avfbp_jax.train.config import RunSetupError
from avfbp_jax.train.presets import synthetic_config


def test_same_settings_and_loop_fields_may_differ(tmp_path):
    config = synthetic_config("gfbp")
    checkpoint.save_config(str(tmp_path), config)
    checkpoint.check_same_run(str(tmp_path), config)
    config.train.num_steps = 600  # continuing a run for longer
    config.train.eval_every = 50
    config.train.num_devices = 1
    config.data.loader_threads = 1
    config.model.fbp_impl = "pallas"  # the same function and parameters, another kernel
    checkpoint.check_same_run(str(tmp_path), config)


def test_other_settings_are_refused_and_named(tmp_path):
    config = synthetic_config("gfbp")
    checkpoint.save_config(str(tmp_path), config)
    config.model.fbp_dropout = 0.25
    config.seed = 3
    with pytest.raises(RunSetupError) as e:
        checkpoint.check_same_run(str(tmp_path), config)
    message = str(e.value)
    assert str(tmp_path) in message
    assert "model.fbp_dropout: 0.0 -> 0.25" in message
    assert "seed: 0 -> 3" in message
    assert "num_steps" not in message


def test_added_or_removed_fields_are_refused(tmp_path):
    config = synthetic_config("gfbp")
    checkpoint.save_config(str(tmp_path), config)
    del config.data["synthetic"]
    with pytest.raises(RunSetupError, match=r"data\.synthetic\.clips: 560 -> '<absent>'"):
        checkpoint.check_same_run(str(tmp_path), config)


def test_a_run_saved_before_new_fields_existed_loads_with_their_defaults(tmp_path):
    config = synthetic_config("gfbp")
    checkpoint.save_config(str(tmp_path), config)
    with open(tmp_path / "config.json") as f:
        saved = json.load(f)
    del saved["model"]["fbp_impl"], saved["train"]["profile_steps"]  # an older run's file
    (tmp_path / "config.json").write_text(json.dumps(saved))
    loaded = checkpoint.load_config(str(tmp_path))
    assert loaded.model.fbp_impl == "xla" and tuple(loaded.train.profile_steps) == ()
    assert loaded.model.fbp_o == 64  # saved values are kept
    checkpoint.check_same_run(str(tmp_path), config)  # resuming it is the same run
