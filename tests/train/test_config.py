"""Experiment files load, command-line overrides parse to the field's type."""

import glob
import os

import pytest

from avfbp_jax.models.config import FUSION_TYPES
from avfbp_jax.train.main import aggregate_folds, apply_overrides, load_config_file
from tests.train.conftest import REPO


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "experiments", "*.py"))))
def test_experiment_files_load(path):
    c = load_config_file(path)
    assert set(c.keys()) >= {"model", "data", "train", "seed"}
    assert c.model.fusion in FUSION_TYPES
    assert c.train.batch_size % 8 == 0 and c.data.cache_dir


def test_synthetic_experiments_differ_only_in_fusion():
    configs = {f: load_config_file(os.path.join(REPO, "experiments", f"synthetic_{f}.py"))
               for f in FUSION_TYPES}
    base = configs["amfbp"].to_dict()
    for fusion, c in configs.items():
        d = c.to_dict()
        assert d["model"].pop("fusion") == fusion
        assert d == {**base, "model": {k: v for k, v in base["model"].items() if k != "fusion"}}


def test_overrides_take_the_field_type():
    c = load_config_file(os.path.join(REPO, "experiments", "synthetic_amfbp.py"))
    apply_overrides(c, ["--config.train.num_steps=7", "config.train.learning_rate=1",
                        "--config.model.fusion=gfbp", "--config.train.frozen=audio,video",
                        "--config.data.buckets=(2.0, 4.0)", "--config.train.distributed=true"])
    assert c.train.num_steps == 7 and isinstance(c.train.learning_rate, float)
    assert c.model.fusion == "gfbp" and c.train.frozen == ("audio", "video")
    assert c.data.buckets == (2.0, 4.0) and c.train.distributed is True
    with pytest.raises(KeyError, match="num_stepz"):
        apply_overrides(c, ["--config.train.num_stepz=3"])
    with pytest.raises(ValueError, match="num_steps"):
        apply_overrides(c, ["--config.train.num_steps=abc"])


def test_aggregate_folds():
    folds = [{"test": {"wa": w, "ua": w - 0.1, "macro_f1": w - 0.2}} for w in (0.6, 0.7, 0.8)]
    out = aggregate_folds(folds)
    assert out["wa"]["mean"] == pytest.approx(0.7)
    assert out["ua"]["std"] == pytest.approx(0.08164966, rel=1e-6)
