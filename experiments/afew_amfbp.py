"""AFEW (EmotiW) 7-class AM-FBP, accuracy on Val_AFEW.

    avfbp train --config experiments/afew_amfbp.py --workdir runs/afew_amfbp \
        --config.data.corpus_dir=/path/to/AFEW

Video stream: per-frame features of the frozen face-expression network (the FER port), computed
once by `avfbp prepare --fer-features` and fed through video.encoder="identity" (data.frame_input
"fer"); the frame self-attention and fusion train on top. To train the small face CNN on the
crops instead: --config.data.frame_input=crops --config.model.video.encoder=cnn
--config.model.video.feature_dim=128.
"""

from avfbp_jax.train.presets import afew_config


def get_config():
    return afew_config("amfbp")
