"""`avfbp train`: config errors end with one line and status 2 before any work; folds aggregate."""

import os

import pytest

from avfbp_jax.commands import cli
from avfbp_jax.train.folds import aggregate_folds
from tests.train.conftest import REPO

SYNTHETIC = os.path.join(REPO, "experiments", "synthetic.py")


@pytest.mark.parametrize("args,message", [
    ([SYNTHETIC, "--config.model.fusion", "sum"],  # space-separated, as --config.train.num_steps
     "config.model.fusion='sum': expected one of 'audio',"),
    ([f"{SYNTHETIC}:gbfp"], f"{SYNTHETIC}: unknown variant 'gbfp'; valid variants: audio, video"),
    ([SYNTHETIC, "--config.train.num_stepz=5"], "--config.train.num_stepz: config.train has no "
                                                "field 'num_stepz' (did you mean 'num_steps'?)"),
    ([SYNTHETIC, "--config.train.num_steps", "many"], "--config.train.num_steps=many: "),
    ([SYNTHETIC, "--all-fold"], "Unknown command line flag 'all-fold'"),  # not abbreviated
    ([os.path.join(REPO, "experiments", "synthetic_amfbp.py")], "no such experiment config"),
])
def test_config_errors_are_one_line_before_any_work(tmp_path, capsys, args, message):
    # num_steps 0 is invalid: should an argument slip through, validate() stops the run.
    argv = ["train", "--workdir", str(tmp_path / "run"), "--config", *args[:1],
            "--config.train.num_steps", "0", f"--config.data.corpus_dir={tmp_path / 'corpus'}",
            f"--config.data.cache_dir={tmp_path / 'cache'}", *args[1:]]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("avfbp train: error: ") and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert os.listdir(tmp_path) == []  # no corpus, cache or workdir was made


def test_aggregate_folds():
    folds = [{"test": {"wa": w, "ua": w - 0.1, "macro_f1": w - 0.2}} for w in (0.6, 0.7, 0.8)]
    out = aggregate_folds(folds)
    assert out["wa"]["mean"] == pytest.approx(0.7)
    assert out["ua"]["std"] == pytest.approx(0.08164966, rel=1e-6)
