"""python3 -m tools.run_table: every variant of an experiment file over seeds into one table; a
finished run is reused, one made with other settings is refused; a bad variant or override fails
before any training."""

import json
import os

import pytest

from tools import REPO, run_table


def _experiment(tmp_path, cache_dir: str) -> str:
    """An experiment file whose get_config(VARIANT) is the tiny run of fusion VARIANT."""
    path = tmp_path / "tiny.py"
    path.write_text(
        "import sys\n"
        f"sys.path.insert(0, {REPO!r})\n"
        "from avfbp_jax.models.config import FUSION_TYPES\n"
        "from tests.train.conftest import tiny_run_config\n\n\n"
        "def get_config(variant):\n"
        "    if variant not in FUSION_TYPES:\n"
        "        raise ValueError(f'unknown variant {variant!r}')\n"
        f"    return tiny_run_config({cache_dir!r}, variant)\n")
    return str(path)


def _param_count(config) -> int:
    """Parameters of config's model, from its abstract init (no training, no checkpoint)."""
    import jax
    import numpy as np

    from avfbp_jax.models.model import AVModel, example_batch

    batch = example_batch(config.model, 1, seconds=2.0, num_frames=8)
    shapes = jax.eval_shape(lambda b: AVModel(config.model).init(jax.random.PRNGKey(0), b), batch)
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(shapes["params"]))


def test_bad_variant_or_override_fails_before_training(tmp_path, capsys):
    config = _experiment(tmp_path, str(tmp_path / "no-cache"))
    out = tmp_path / "out"
    assert run_table.main(["--config", config, "--variants", "gfbp,nonsense", "--seeds", "0",
                           "--out", str(out)]) == 2
    assert "nonsense" in capsys.readouterr().err
    assert run_table.main(["--config", config, "--variants", "gfbp", "--seeds", "0", "--out",
                           str(out), "--config.train.no_such_field=1"]) == 2
    assert "no_such_field" in capsys.readouterr().err
    assert run_table.main(["--config", str(tmp_path / "missing.py"), "--variants", "gfbp",
                           "--out", str(out)]) == 2
    assert not out.exists()
    with pytest.raises(SystemExit):
        run_table.main(["--config", config, "--variants", "gfbp", "--out", str(out), "--bogus"])


@pytest.mark.slow
def test_table_over_variants_and_seeds_reuses_finished_runs(tmp_path, capsys):
    from tests.train.conftest import tiny_corpus

    _, cache_dir = tiny_corpus(str(tmp_path / "data"))
    config = _experiment(tmp_path, cache_dir)
    out = tmp_path / "table"
    argv = ["--config", config, "--variants", "gfbp,audio", "--seeds", "0", "--out", str(out),
            "--config.train.num_steps=2", "--config.train.eval_every=2"]
    assert run_table.main(argv) == 0
    assert sorted(os.listdir(out)) == ["audio-s0", "gfbp-s0", "table.json", "table.md"]
    table = json.loads((out / "table.json").read_text())
    assert set(table) == {"gfbp", "audio"}
    for variant, row in table.items():
        assert row["seeds"] == 1 and len(row["test_wa"]["values"]) == 1
        assert 0 <= row["val_wa"]["mean"] <= 100 and row["val_wa"]["std"] == 0
        with open(out / f"{variant}-s0" / "metrics.json") as f:
            assert row["samples_per_s"] == json.load(f)["throughput"]["samples_per_s"] > 0
        assert row["params"] == _param_count(run_table._load(f"{config}:{variant}", []))
    assert table["gfbp"]["params"] > table["audio"]["params"]
    md = (out / "table.md").read_text()
    assert md.startswith("| variant | val WA |") and "| params | train s | samples/s |" in md
    assert "| gfbp | " in md and f" | {table['gfbp']['params']:,} | " in md
    assert f"`python3 -m tools.run_table {' '.join(argv)}`" in md
    with open(out / "gfbp-s0" / "config.json") as f:
        assert json.load(f)["seed"] == 0

    metrics = out / "gfbp-s0" / "metrics.json"
    before = metrics.stat().st_mtime_ns
    capsys.readouterr()
    assert run_table.main(argv) == 0  # both runs finished: reused, nothing trained
    assert metrics.stat().st_mtime_ns == before
    assert json.loads((out / "table.json").read_text()) == table

    assert run_table.main([*argv, "--config.train.learning_rate=0.05"]) == 2
    assert "other settings" in capsys.readouterr().err
