"""IEMOCAP 4-class, audio-only attention FCN (the paper's 71.40% audio-only stage).

    avfbp train --config experiments/iemocap_audio_fcn.py --workdir runs/iemocap_audio \
        --config.data.corpus_dir=/path/to/IEMOCAP_full_release

Its checkpoint initialises the audio stream of iemocap_amfbp.py (train.init_from).
"""

from avfbp_jax.train.presets import iemocap_config


def get_config():
    return iemocap_config("audio")
