"""IEMOCAP 4-class AM-FBP, leave-one-session-out.

One fold (test session k):
    avfbp train --config experiments/iemocap_amfbp.py --workdir runs/iemocap_amfbp \
        --config.data.corpus_dir=/path/to/IEMOCAP_full_release --config.data.test_session=k
All five folds, aggregated into runs/iemocap_amfbp/folds.json:
    avfbp train --config experiments/iemocap_amfbp.py --workdir runs/iemocap_amfbp --all-folds ...
Stream pretraining: add --config.train.init_from=runs/iemocap_audio (an iemocap_audio_fcn.py
workdir of the same fold) to start the audio stream from it, and --config.train.frozen=audio to
keep it fixed.
"""

from avfbp_jax.train.presets import iemocap_config


def get_config():
    return iemocap_config("amfbp")
