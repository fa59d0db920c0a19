"""Default model configuration (design brief section 2).

Every detail the paper leaves open is a field here; fields marked *(chosen)* in the design brief
keep the brief's default.
"""

import ml_collections

# The bilinear fusion family: FBP (this paper's op) and the members it is compared with.
FUSION_OPS = ("fbp", "mfh", "mlb", "mutan", "tucker", "block", "mcb", "tfn", "lmf")
# The constructions that wrap an op (model.fusion_op): adaptive, and adaptive multi-level.
ADAPTIVE_FUSIONS = ("agfbp", "amfbp")
# Fusion heads: single streams, concat, late, global FBP, the two wrappers, and every other
# member of the family as a global head.
FUSION_TYPES = ("audio", "video", "concat", "late", "gfbp", *ADAPTIVE_FUSIONS, *FUSION_OPS[1:])
FBP_IMPLS = ("xla", "pallas", "pallas_mosaic")
DTYPES = ("float32", "bfloat16")
AUDIO_ATTENTIONS = ("1d", "2d")
VIDEO_ENCODERS = ("cnn", "fer", "identity")
VIDEO_ATTENTIONS = ("sigmoid", "softmax")
PARAM_GROUPS = ("audio", "video", "fusion")  # AVModel's top-level parameter subtrees


TUCKER_MM_DIM = 235  # see fusion_ops_config


def fusion_ops_config(output_dim: int = 1000) -> ml_collections.ConfigDict:
    """model.fusion_ops: the settings of every family member but FBP, by name (FUSION_OPS).

    Each group holds its module's constructor arguments at the defaults of its reference
    implementation (block.bootstrap.pytorch's fusions for MFH, MLB, MUTAN, Tucker, BLOCK and MCB;
    the authors' code for TFN and LMF; see each module in avfbp_jax/ops). output_dim, which the
    references leave to the task, is FBP's o of the paper-sized model (chosen). One exception,
    TUCKER_MM_DIM: the reference Tucker's default mm_dim 1600 makes a 1600^3 core (4.1e9
    parameters, 16 GB), so Tucker gets the 235 its reference's VQA setup uses (chosen).
    """
    block_style = dict(normalize=False, dropout_input=0.0, dropout_pre_lin=0.0,
                       dropout_output=0.0)
    return ml_collections.ConfigDict({
        "mfh": dict(output_dim=output_dim, mm_dim=1200, factor=2, activ_input="relu",
                    activ_output="relu", **block_style),
        "mlb": dict(output_dim=output_dim, mm_dim=1200, activ_input="relu",
                    activ_output="relu", **block_style),
        "mutan": dict(output_dim=output_dim, mm_dim=1600, rank=15, shared=False, **block_style),
        "tucker": dict(output_dim=output_dim, mm_dim=TUCKER_MM_DIM, **block_style),
        "block": dict(output_dim=output_dim, mm_dim=1600, chunks=20, rank=15, shared=False,
                      dropout_input=0.0, dropout_pre_lin=0.0, dropout_output=0.0,
                      pos_norm="before_cat"),
        "mcb": dict(output_dim=output_dim, mm_dim=16000, activ_output="relu", dropout_output=0.0),
        "tfn": dict(output_dim=output_dim, post_fusion_dim=32, post_fusion_dropout=0.3),
        "lmf": dict(output_dim=output_dim, rank=4),
    })


def model_config() -> ml_collections.ConfigDict:
    """Returns the paper-sized default model: AM-FBP over an AlexNet-width audio FCN."""
    c = ml_collections.ConfigDict()
    c.fusion = "amfbp"  # one of FUSION_TYPES
    c.num_classes = 4
    c.dtype = "float32"  # compute dtype: "float32" or "bfloat16"; parameters stay float32

    # 2.1 Audio front end, computed on device.
    c.frontend = ml_collections.ConfigDict()
    c.frontend.sample_rate = 16000
    c.frontend.win_length = 640  # 40 ms Hamming window
    c.frontend.hop_length = 160  # 10 ms hop
    c.frontend.n_fft = 800  # (chosen)
    c.frontend.n_bins = 200  # lowest 200 bins, 0-4 kHz (chosen)
    c.frontend.log_floor = 1e-10
    c.frontend.normalize = True  # per-utterance mean/variance over valid frames (chosen)

    # 2.2 Audio stream: FCN + LRN + attention.
    c.audio = ml_collections.ConfigDict()
    c.audio.width = 1.0  # channel multiplier; < 1 for tests and CPU demos
    c.audio.channels = (96, 256, 384, 384, 256)  # (chosen, predecessor FCN)
    c.audio.kernels = (11, 5, 3, 3, 3)
    c.audio.conv1_stride = 4
    c.audio.conv1_pad = 0  # Caffe's AlexNet pads conv1 by 0 (torchvision's by 2); later k // 2
    c.audio.pool_after = (0, 1, 4)  # max-pool 3/2 after conv1, conv2, conv5
    c.audio.pool_window = 3
    c.audio.pool_stride = 2
    c.audio.lrn_after = (0, 1)
    c.audio.lrn_size = 5
    c.audio.lrn_alpha = 1e-4
    c.audio.lrn_beta = 0.75
    c.audio.lrn_k = 2.0
    c.audio.attention = "1d"  # "1d" over time (chosen) or "2d" over frequency x time
    c.audio.attention_dim = 256
    c.audio.attention_lambda = 0.3  # (chosen)
    # LayerNorm on each step's features before attention and fusion (chosen: the paper names
    # none; without it the unnormalised FCN's features saturate the attention and AG-FBP tanh).
    c.audio.layer_norm = True
    # A folder of ImageNet AlexNet convolutions written by
    # `python3 -m avfbp_jax.commands.alexnet_convert` (needs the torchvision layout, see
    # torchvision_alexnet): the FCN starts from them.
    c.audio.init_weights = ""

    # 2.3 Video stream: per-frame encoder + frame self-attention.
    c.video = ml_collections.ConfigDict()
    c.video.encoder = "cnn"  # "cnn" (trainable, face crops), "fer" (frozen FER port), "identity"
    c.video.crop_size = 64  # grayscale face crop side (chosen; the FER port's input size)
    c.video.cnn_channels = (32, 64, 128)
    c.video.feature_dim = 128  # per-frame feature size after the encoder's projection
    c.video.attention = "sigmoid"  # "sigmoid" (frame attention networks) or "softmax"
    c.video.layer_norm = True  # LayerNorm on each frame's features (chosen, as audio.layer_norm)

    # 2.4 / 2.5 Fusion.
    c.fbp_k = 5
    c.fbp_o = 1000
    c.fbp_dropout = 0.1
    # FBP implementation, one of FBP_IMPLS: "xla" (ops.fbp, runs everywhere), "pallas" (the
    # fused kernel of ops.fbp_pallas: Triton on a GPU, interpret mode, slow, on a CPU) or
    # "pallas_mosaic" (the same fused kernel on Mosaic GPU, ops.fbp_mosaic: jax >= 0.11, a Hopper
    # GPU, float32 as TF32; its interpreter on a CPU). Same parameters and function; only the
    # dropout masks differ (the fused kernels' hash instead of jax.random).
    c.fbp_impl = "xla"
    # The op inside agfbp / amfbp (one of FUSION_OPS): "fbp" is the paper's AG-FBP / AM-FBP,
    # another member makes AG-X / AM-X with the same weighting MLP and trunks.
    c.fusion_op = "fbp"
    # Each other member's settings (its module's constructor arguments), at the sizes of its
    # reference implementation; used by fusion=<member> and by fusion_op=<member>.
    c.fusion_ops = fusion_ops_config()
    c.adaptive_hidden = 128  # MLP producing the AG-FBP modality weights (chosen)
    c.num_trunks = 3  # AM-FBP intra-trunk segments (chosen)
    c.head_hidden = 256  # MLP width of the concat head
    c.head_dropout = 0.0
    return c


def tiny_model_config(fusion: str = "amfbp", **overrides) -> ml_collections.ConfigDict:
    """The smallest model that still runs every code path: the one recipe for tests, dry runs
    and smoke benchmarks (a few thousand parameters; 64x64 crops, as model_config()).

    overrides: dotted field names relative to the model config, e.g.
    `tiny_model_config("gfbp", dtype="bfloat16", **{"video.encoder": "identity"})`.
    """
    c = model_config()
    c.fusion = fusion
    c.audio.width = 0.0625
    c.audio.attention_dim = 8
    c.video.cnn_channels = (4, 8, 8)
    c.video.feature_dim = 8
    c.fbp_k = 2
    c.fbp_o = 8
    c.adaptive_hidden = 8
    c.head_hidden = 8
    c.fusion_ops = fusion_ops_config(output_dim=8)
    c.fusion_ops.update_from_flattened_dict({
        "mfh.mm_dim": 8, "mlb.mm_dim": 8, "mutan.mm_dim": 8, "mutan.rank": 2,
        "tucker.mm_dim": 8, "block.mm_dim": 8, "block.chunks": 2, "block.rank": 2,
        "mcb.mm_dim": 16, "tfn.post_fusion_dim": 8, "lmf.rank": 2})
    c.update_from_flattened_dict(overrides)
    return c


def torchvision_alexnet(audio: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Sets the audio FCN (a model config's `audio` block, in place) to torchvision's AlexNet
    layout, the one its ImageNet weights fit: 64-192-384-256-256 channels, conv1 padded by 2,
    max-pool 3/2 after conv1, conv2 and conv5, no LRN, width 1."""
    audio.width = 1.0
    audio.channels = (64, 192, 384, 256, 256)
    audio.kernels = (11, 5, 3, 3, 3)
    audio.conv1_stride = 4
    audio.conv1_pad = 2
    audio.pool_after = (0, 1, 4)
    audio.pool_window = 3
    audio.pool_stride = 2
    audio.lrn_after = ()
    return audio
