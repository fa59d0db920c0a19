"""Large-batch AM-FBP for accelerators: LAMB, global batch 1024, bf16 compute, f32 params.

    avfbp train --config experiments/large_batch.py --workdir runs/large_batch \
        --config.data.corpus_dir=... --config.data.cache_dir=...

Uses every visible device (data parallel); the global batch must divide over them.
Defaults to the synthetic corpus with the paper-sized model so it runs anywhere.
"""

from avfbp_jax.train.presets import synthetic_config


def get_config():
    c = synthetic_config("amfbp")
    c.model.audio.width = 1.0
    c.model.audio.attention_dim = 256
    c.model.video.cnn_channels = (32, 64, 128)
    c.model.video.feature_dim = 128
    c.model.fbp_o = 1000
    c.model.adaptive_hidden = 128
    c.model.head_hidden = 256
    c.model.dtype = "bfloat16"
    t = c.train
    t.optimizer = "lamb"
    t.batch_size = 1024
    t.eval_batch_size = 1024
    t.learning_rate = 1e-2
    t.warmup_steps = 100
    t.num_steps = 2000
    t.weight_decay = 1e-2
    t.log_every = 20
    t.eval_every = 200
    t.checkpoint_every = 200
    return c
