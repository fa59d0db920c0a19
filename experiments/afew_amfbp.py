"""AFEW (EmotiW) 7-class AM-FBP, accuracy on Val_AFEW.

    avfbp train --config experiments/afew_amfbp.py --workdir runs/afew_amfbp \
        config.data.corpus_dir=/path/to/AFEW

Video stream: per-frame features of the frozen face-expression network (the FER port), computed
once by `avfbp prepare --fer-features` and fed through video.encoder="identity" (data.frame_input
"fer"); the frame self-attention and fusion train on top. To train the small face CNN on the
crops instead: config.data.frame_input=crops config.model.video.encoder=cnn
config.model.video.feature_dim=128.
"""

from avfbp_jax.train.presets import base_config


def get_config():
    c = base_config()
    c.data.corpus = "afew"
    c.data.corpus_dir = "AFEW"
    c.data.cache_dir = "runs/data/afew_cache"
    c.data.val_split = "val"
    c.data.buckets = (2.0, 3.0, 4.0, 6.0)
    c.data.frame_input = "fer"
    c.model.video.encoder = "identity"
    c.model.video.feature_dim = 128  # the FER port's feature size
    c.model.fusion = "amfbp"
    c.model.num_classes = 7
    t = c.train
    t.batch_size = 32
    t.eval_batch_size = 64
    t.num_steps = 10000
    t.warmup_steps = 500
    t.learning_rate = 5e-4
    t.log_every = 50
    t.eval_every = 500
    t.checkpoint_every = 500
    t.keep_best = "val/wa"  # EmotiW reports accuracy
    return c
