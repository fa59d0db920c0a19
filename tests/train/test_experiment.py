"""Experiment files load (with variants), command-line overrides parse to the field's type."""

import glob
import os

import pytest

from avfbp_jax.models.config import FUSION_TYPES
from avfbp_jax.train.config import validate
from avfbp_jax.train.experiment import apply_overrides, load_config_file
from avfbp_jax.train.presets import FUSION_VARIANTS
from tests.train.conftest import REPO

SYNTHETIC = os.path.join(REPO, "experiments", "synthetic.py")


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "experiments", "*.py"))))
def test_experiment_files_load(path):
    c = load_config_file(path)
    assert set(c.keys()) >= {"model", "data", "train", "seed"}
    assert c.model.fusion in FUSION_TYPES
    assert c.train.batch_size % 8 == 0 and c.data.cache_dir
    validate(c)


def test_synthetic_variants_differ_only_in_fusion():
    configs = {v: load_config_file(f"{SYNTHETIC}:{v}") for v in FUSION_VARIANTS}
    base = configs["amfbp"].to_dict()
    assert load_config_file(SYNTHETIC).to_dict() == base  # the main job: amfbp
    assert configs["am-mutan"].model.fusion == "amfbp"
    assert configs["am-mutan"].model.fusion_op == "mutan"
    assert configs["ag-lmf"].model.fusion == "agfbp" and configs["ag-lmf"].model.fusion_op == "lmf"
    assert configs["mcb"].model.fusion == "mcb" and configs["mcb"].model.fusion_op == "fbp"
    for variant, c in configs.items():
        d = c.to_dict()
        fusion, op = d["model"].pop("fusion"), d["model"].pop("fusion_op")
        assert variant in (fusion, f"{variant[:2]}-{op}")
        rest = {k: v for k, v in base["model"].items() if k not in ("fusion", "fusion_op")}
        assert d == {**base, "model": rest}


def test_unknown_variant_names_the_file_and_the_variants():
    with pytest.raises(ValueError, match="unknown variant 'gbfp'") as e:
        load_config_file(f"{SYNTHETIC}:gbfp")
    message = e.value.args[0]
    assert message.startswith(SYNTHETIC) and ", ".join(FUSION_TYPES) in message
    assert "\n" not in message
    with pytest.raises(ValueError, match="no variants"):
        load_config_file(os.path.join(REPO, "experiments", "large_batch.py:gfbp"))
    with pytest.raises(FileNotFoundError, match="no such experiment"):
        load_config_file(os.path.join(REPO, "experiments", "synthetic_gfbp.py"))


def test_overrides_take_the_field_type():
    c = load_config_file(SYNTHETIC)
    apply_overrides(c, ["--config.train.num_steps=7", "--config.train.learning_rate", "1",
                        "--config.model.fusion=gfbp", "--config.train.frozen=audio",
                        "--config.train.frozen=video", "--config.data.buckets=(2.0, 4.0)",
                        "--config.train.distributed=true", "--config.train.profile_steps=2,3"])
    assert c.train.num_steps == 7 and isinstance(c.train.learning_rate, float)
    assert c.model.fusion == "gfbp" and c.train.frozen == ("audio", "video")
    assert c.data.buckets == (2.0, 4.0) and c.train.distributed is True
    assert c.train.profile_steps == (2, 3)
    apply_overrides(c, ["--config.train.num_steps", "5", "--noconfig.train.distributed"])
    assert c.train.num_steps == 5 and c.train.distributed is False


@pytest.mark.parametrize("overrides,error,match", [
    (["--config.train.num_stepz=3"], KeyError, "config.train has no field 'num_stepz' "
                                               r"\(did you mean 'num_steps'\?\)"),
    (["--config.trian.num_steps=3"], KeyError, "config has no field 'trian'"),
    (["--config.seed.x=3"], KeyError, "config.seed is a value"),
    (["--config.train.num_steps=abc"], ValueError, "num_steps=abc"),
    (["--config.train.num_steps"], ValueError, "Missing value for flag --config.train.num_steps"),
    (["--config.seed", "1", "2"], ValueError, "unexpected argument '2'"),
    (["--workdri=x"], ValueError, "workdri"),
])
def test_bad_overrides_are_one_line_errors(overrides, error, match):
    c = load_config_file(SYNTHETIC)
    with pytest.raises(error, match=match) as e:
        apply_overrides(c, overrides)
    assert "\n" not in e.value.args[0]
