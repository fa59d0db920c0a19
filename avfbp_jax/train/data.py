"""Makes sure a run's feature cache exists: synthesise the corpus and prepare it when missing
(or written by an older version of the cache format).

Experiments on the embedded synthetic corpus carry a `config.data.synthetic` block (clips, seed);
for them a missing (or unfinished) corpus is generated with avfbp_jax.data.synthetic. A missing
(or unfinished) cache is then written by avfbp_jax.data.prepare.prepare_cache (what `avfbp
prepare` runs) with the data config's settings, and with the FER port's per-frame features when
data.frame_input is "fer". Both resume where an interrupted run stopped. Real corpora must exist
already.
"""

import json
import os

import jax
import ml_collections

from avfbp_jax.data import cache as cache_lib
from avfbp_jax.train.config import RunSetupError


def ensure_cache(data: ml_collections.ConfigDict) -> None:
    """Creates data.corpus_dir (synthetic only) and data.cache_dir if they do not exist."""
    if not data.cache_dir:
        raise RunSetupError("config.data.cache_dir is empty: say where the feature cache lives")
    if data.get("synthetic") is not None:
        _check_synthetic_version(data)
    if cache_lib.is_prepared(data.cache_dir):
        return
    if jax.process_count() > 1:
        raise RunSetupError(f"{data.cache_dir}: no feature cache; in multi-host runs prepare "
                            "it before training (`avfbp prepare`)")
    synthetic = data.get("synthetic")
    if synthetic is not None and not os.path.exists(os.path.join(data.corpus_dir, "corpus.json")):
        from avfbp_jax.data.synthetic import write_corpus

        print(f"generating the synthetic corpus ({synthetic.clips} clips, seed {synthetic.seed}) "
              f"in {data.corpus_dir}", flush=True)
        try:  # finishes a corpus that an interrupted run left unfinished
            write_corpus(data.corpus_dir, clips=synthetic.clips, seed=synthetic.seed,
                         workers=data.workers, task=synthetic.get("task", "emotion"))
        except (ValueError, FileExistsError) as e:
            raise RunSetupError(f"config.data.corpus_dir: {e}") from None
    if not os.path.isdir(data.corpus_dir):
        raise RunSetupError(f"config.data.corpus_dir={data.corpus_dir!r} does not exist")
    _prepare(data)


def _check_synthetic_version(data: ml_collections.ConfigDict) -> None:
    """Refuses a synthetic corpus written by another generator version (its cues differ)."""
    from avfbp_jax.data.synthetic import GENERATOR_VERSION

    path = os.path.join(data.corpus_dir, "corpus.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        version = json.load(f).get("version")
    if version != GENERATOR_VERSION:
        raise RunSetupError(
            f"{path}: synthetic corpus version {version}, but this code generates version "
            f"{GENERATOR_VERSION} (different cues, so results would not match the README); "
            f"delete {data.corpus_dir} and {data.cache_dir} to regenerate them")


def _prepare(data: ml_collections.ConfigDict) -> None:
    """Writes the feature cache with the data config's settings (prepare_cache)."""
    from avfbp_jax.data import prepare

    print(f"preparing the feature cache {data.cache_dir}", flush=True)
    try:
        frame_features = None
        if data.frame_input == "fer":
            from avfbp_jax.models import fer

            frame_features = fer.FrameFeatures(data.crop_size)
        result = prepare.prepare_cache(data.corpus_dir, data.cache_dir, data, frame_features,
                                       workers=data.workers)
    except (ValueError, OSError) as e:
        raise RunSetupError(f"preparing the feature cache {data.cache_dir}: {e}") from None
    print(prepare.summary(result, data.cache_dir), flush=True)
    error = prepare.failure(result, data.corpus_dir)
    if error:
        raise RunSetupError(error)
