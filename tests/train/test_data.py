"""ensure_cache: a synthetic corpus from another generator version, or a folder that is no
synthetic corpus, is refused, not reused."""

import json

import pytest

from avfbp_jax.data.synthetic import GENERATOR_VERSION
from avfbp_jax.train.config import RunSetupError
from avfbp_jax.train.data import ensure_cache
from avfbp_jax.train.presets import synthetic_config


def test_a_synthetic_corpus_of_another_generator_version_is_refused(tmp_path):
    data = synthetic_config().data
    data.corpus_dir = str(tmp_path / "corpus")
    data.cache_dir = str(tmp_path / "cache")
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "corpus.json").write_text(
        json.dumps({"version": GENERATOR_VERSION - 1}))
    with pytest.raises(ValueError, match=f"version {GENERATOR_VERSION - 1}, but this code "
                                         f"generates version {GENERATOR_VERSION}"):
        ensure_cache(data)
    assert not (tmp_path / "cache").exists()


def test_a_folder_that_is_no_corpus_is_refused_with_one_line(tmp_path):
    data = synthetic_config().data
    data.corpus_dir = str(tmp_path / "corpus")
    data.cache_dir = str(tmp_path / "cache")
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "notes.txt").write_text("my own files")
    with pytest.raises(RunSetupError, match="holds no avfbp synthetic corpus") as refused:
        ensure_cache(data)
    assert "\n" not in str(refused.value)
    assert sorted(p.name for p in (tmp_path / "corpus").iterdir()) == ["notes.txt"]
