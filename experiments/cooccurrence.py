"""The co-occurrence probe (issue 16): each fusion head on the synthetic co-occurrence task.

    avfbp train --config experiments/cooccurrence.py:streams --workdir runs/cooc/streams-s0
    avfbp train --config experiments/cooccurrence.py:amfbp --workdir runs/cooc/amfbp-s0 \
        --config.seed=0

The task and the ceiling of each head are described in avfbp_jax/data/cooccurrence.py: every
clip has one event in the voice (high or low) and one in the face (smile or frown), and the
eight classes say which ones and whether they overlap in time.

Variants: "streams" trains both streams with late fusion (900 steps, the one run over the
budget below), and every other variant starts its audio and video streams from that run
(runs/cooc/streams-s0, which must exist) and trains the whole model for 300 steps: the seven
fusion types and wrapper variants of experiments/synthetic.py (audio, video, concat, late, gfbp,
agfbp, amfbp, the family's global heads mfh ... lmf, ag-X and am-X) and amfbp-t1, -t2, -t3, -t5
(AM-FBP with 1, 2, 3 and 5 trunks; amfbp has the default 3). The heads are compared on streams that
already see their events: from scratch in 300 steps the face CNN does not (it needs about
7000 clips, 450 steps of 16, before it tells a smile from a frown in 15-25% of the frames), and
the trunk level cannot fuse events that one stream does not see (README).

The corpus (2000 clips of 4.5-6 s, seed 0) is generated into runs/data/cooccurrence and prepared
into runs/data/cooccurrence_cache on first use. On top of the synthetic preset, sized so a run
takes about 90 s on one CPU core: one 6 s bucket (one compiled shape), 4 face crops per second
of 32x32 pixels, the spectrogram's lowest 80 bins (0-1.6 kHz: pitch, energy and the first
formant; the audio FCN needs at least 67 bins, fewer collapse its frequency axis to nothing),
audio width 0.125 (12-32-48-48-32 channels), batch 16, one evaluation at the end.
"""

import ml_collections

from avfbp_jax.data import cooccurrence
from avfbp_jax.train.presets import FUSION_VARIANTS, synthetic_config

STREAMS_RUN = "runs/cooc/streams-s0"  # the "streams" variant's run that the others start from
TRUNKS = {"amfbp-t1": 1, "amfbp-t2": 2, "amfbp-t3": 3, "amfbp-t5": 5}
VARIANTS = ("streams", *FUSION_VARIANTS, *TRUNKS)


def get_config(variant: str = "amfbp") -> ml_collections.ConfigDict:
    if variant not in VARIANTS:
        raise ValueError(f"experiments/cooccurrence.py: unknown variant {variant!r}; choose one "
                         f"of {', '.join(VARIANTS)}")
    fusion = {"streams": "late", **dict.fromkeys(TRUNKS, "amfbp")}.get(variant, variant)
    c = synthetic_config(fusion)
    d = c.data
    d.corpus_dir = "runs/data/cooccurrence"
    d.cache_dir = "runs/data/cooccurrence_cache"
    d.synthetic = ml_collections.ConfigDict({"clips": 2000, "seed": 0, "task": "cooccurrence"})
    d.buckets = (6.0,)
    d.fps = 4.0
    d.crop_size = 32

    m = c.model
    m.num_classes = len(cooccurrence.CLASSES)
    m.num_trunks = TRUNKS.get(variant, m.num_trunks)
    m.frontend.n_bins = 80
    m.audio.width = 0.125
    m.video.crop_size = 32

    t = c.train
    t.batch_size = 16
    t.num_steps = 900 if variant == "streams" else 300
    t.eval_every = t.checkpoint_every = t.num_steps
    if variant != "streams":
        t.init_from = STREAMS_RUN
        t.init_prefixes = ("audio", "video")
    return c
