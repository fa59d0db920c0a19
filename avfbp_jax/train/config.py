"""Default training configuration (design brief section 4), and validate() for a whole config.

An experiment file composes `config.model` (models.config.model_config()), `config.data`
(data.config.data_config()), `config.train` (train_config()) and `config.seed`.
"""

from typing import NoReturn

import ml_collections

from avfbp_jax.data.cache import FRAME_INPUTS
from avfbp_jax.data.config import CORPUS_KINDS, FACE_DETECTORS, MARKER_ACTOR_SIDES
from avfbp_jax.models.config import (
    ADAPTIVE_FUSIONS,
    AUDIO_ATTENTIONS,
    DTYPES,
    FBP_IMPLS,
    FUSION_OPS,
    FUSION_TYPES,
    PARAM_GROUPS,
    VIDEO_ATTENTIONS,
    VIDEO_ENCODERS,
)

OPTIMIZERS = ("adamw", "sgd", "lamb")
SCHEDULES = ("cosine", "step", "constant")
BEST_METRICS = ("val/ua", "val/wa")


class RunSetupError(ValueError):
    """A run cannot start: its settings do not fit its corpus, cache or workdir."""


def train_config() -> ml_collections.ConfigDict:
    """Returns the training defaults: AdamW, warmup + cosine, data parallel on all devices."""
    c = ml_collections.ConfigDict()
    # Optimizer.
    c.optimizer = "adamw"  # one of OPTIMIZERS
    c.learning_rate = 1e-3  # peak learning rate
    c.momentum = 0.9  # sgd momentum; b1 for adamw and lamb
    c.b2 = 0.999
    c.weight_decay = 1e-4  # decoupled (adamw, lamb) or L2 added to the gradient (sgd)
    c.grad_clip_norm = 1.0  # global-norm clipping; 0 disables
    # Schedule.
    c.schedule = "cosine"  # one of SCHEDULES, after a linear warmup
    c.warmup_steps = 50
    c.end_lr_factor = 0.01  # cosine ends at learning_rate * end_lr_factor
    c.step_boundaries = (0.6, 0.85)  # "step": fractions of num_steps where lr is multiplied
    c.step_factor = 0.1  # by this factor
    # Loss.
    c.label_smoothing = 0.1
    # Per clip, the probability of removing its audio or its faces (one of the two, equally
    # likely) for the step, so a fused model learns to predict from either stream alone.
    c.modality_dropout = 0.0
    c.modality_dropout_start = 0  # the step from which modality dropout applies (0: from the start)
    # Loop.
    c.batch_size = 32  # global batch, split over the "data" mesh axis
    c.eval_batch_size = 64
    c.num_steps = 1000
    c.log_every = 25
    c.eval_every = 200  # also a checkpoint with validation metrics (keep-best)
    c.checkpoint_every = 200  # periodic async saves between evaluations
    c.keep = 2  # most recent checkpoints kept
    c.keep_best = "val/ua"  # one of BEST_METRICS; the best checkpoint is also kept
    c.async_checkpointing = True
    # Freezing and initialisation.
    c.frozen = ()  # top-level param-name prefixes whose updates are zero, e.g. ("audio",)
    c.init_from = ""  # workdir or checkpoint of an audio-only run: copies matching audio params
    c.init_prefixes = ("audio",)  # top-level param names that init_from copies
    # Parallelism.
    c.num_devices = 0  # devices in the "data" mesh axis; 0 = every visible device
    c.distributed = False  # start jax.distributed (multi-process); also env AVFBP_DIST=1
    # Multi-process settings; unset ("", 0, -1) = env JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
    # JAX_PROCESS_ID (what `avfbp launch` sets), else cluster autodetection (SLURM, TPU, ...).
    c.coordinator_address = ""  # host:port of process 0
    c.num_processes = 0
    c.process_id = -1
    c.heartbeat_timeout_s = 100  # jax declares a silent process dead after this and stops all
    # Performance.
    c.peak_tflops = 0.0  # dense peak per device for utilisation; 0 = datasheet table or a GEMM
    c.profile_steps = ()  # (first, last): jax.profiler trace of these steps into WORKDIR/profile
    c.compilation_cache_dir = ""  # JAX's persistent compilation cache ("" = off)
    # Testing hooks.
    c.kill_at_step = -1  # SIGKILL this process after finishing this step (resume tests)
    return c


# Fields with a closed set of values.
CHOICES = {
    "model.fusion": FUSION_TYPES,
    "model.fbp_impl": FBP_IMPLS,
    "model.fusion_op": FUSION_OPS,
    "model.dtype": DTYPES,
    "model.audio.attention": AUDIO_ATTENTIONS,
    "model.video.encoder": VIDEO_ENCODERS,
    "model.video.attention": VIDEO_ATTENTIONS,
    "data.corpus": CORPUS_KINDS,
    "data.frame_input": FRAME_INPUTS,
    "data.marker_actor_side": MARKER_ACTOR_SIDES,
    "data.face_detector": FACE_DETECTORS,
    "train.optimizer": OPTIMIZERS,
    "train.schedule": SCHEDULES,
    "train.keep_best": BEST_METRICS,
}
# Numeric fields with a range: (test, what the range is).
_AT_LEAST_1 = (lambda v: v >= 1, ">= 1")
_AT_LEAST_0 = (lambda v: v >= 0, ">= 0")
_POSITIVE = (lambda v: v > 0, "> 0")
_FRACTION = (lambda v: 0 <= v < 1, "in [0, 1)")
RANGES = {
    "model.num_classes": (lambda v: v >= 2, ">= 2"),
    "model.audio.width": _POSITIVE,
    "model.audio.attention_dim": _AT_LEAST_1,
    "model.video.crop_size": _AT_LEAST_1,
    "model.video.feature_dim": _AT_LEAST_1,
    "model.fbp_k": _AT_LEAST_1,
    "model.fbp_o": _AT_LEAST_1,
    "model.fbp_dropout": _FRACTION,
    "model.adaptive_hidden": _AT_LEAST_1,
    "model.num_trunks": _AT_LEAST_1,
    "model.head_hidden": _AT_LEAST_1,
    "model.head_dropout": _FRACTION,
    "data.sample_rate": _AT_LEAST_1,
    "data.fps": _POSITIVE,
    "data.crop_size": _AT_LEAST_1,
    "data.workers": _AT_LEAST_1,
    "data.prefetch": _AT_LEAST_0,
    "data.loader_threads": _AT_LEAST_1,
    "train.learning_rate": _POSITIVE,
    "train.momentum": _FRACTION,
    "train.b2": _FRACTION,
    "train.weight_decay": _AT_LEAST_0,
    "train.grad_clip_norm": _AT_LEAST_0,
    "train.warmup_steps": _AT_LEAST_0,
    "train.end_lr_factor": _AT_LEAST_0,
    "train.step_factor": _AT_LEAST_0,
    "train.label_smoothing": _FRACTION,
    "train.modality_dropout": _FRACTION,
    "train.modality_dropout_start": _AT_LEAST_0,
    "model.audio.conv1_pad": _AT_LEAST_0,
    "train.batch_size": _AT_LEAST_1,
    "train.eval_batch_size": _AT_LEAST_1,
    "train.num_steps": _AT_LEAST_1,
    "train.log_every": _AT_LEAST_1,
    "train.eval_every": _AT_LEAST_1,
    "train.checkpoint_every": _AT_LEAST_1,
    "train.keep": _AT_LEAST_1,
    "train.num_devices": _AT_LEAST_0,
    "train.num_processes": _AT_LEAST_0,
    "train.process_id": (lambda v: v >= -1, ">= -1 (-1: from the environment)"),
    "train.heartbeat_timeout_s": _POSITIVE,
    "train.peak_tflops": _AT_LEAST_0,
}


def _get(config: ml_collections.ConfigDict, path: str):
    for part in path.split("."):
        config = config[part]
    return config


def _fail(path: str, value, expected: str) -> NoReturn:
    raise RunSetupError(f"config.{path}={value!r}: expected {expected}")


def _fcn_bins(model: ml_collections.ConfigDict) -> int:
    """Frequency rows left after the audio FCN's convolutions and (unpadded) pools."""
    audio, bins = model.audio, model.frontend.n_bins
    for i, kernel in enumerate(audio.kernels):
        stride = audio.conv1_stride if i == 0 else 1
        pad = audio.conv1_pad if i == 0 else kernel // 2
        bins = (bins + 2 * pad - kernel) // stride + 1
        if i in audio.pool_after:
            bins = (bins - audio.pool_window) // audio.pool_stride + 1
    return bins


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises RunSetupError naming the first field whose value is outside its valid set or range.

    Cheap and free of side effects: commands call it before any work (preparing the cache,
    starting devices), so a mistyped value fails at once instead of minutes into a run.
    """
    for path, choices in CHOICES.items():
        if _get(config, path) not in choices:
            _fail(path, _get(config, path), "one of " + ", ".join(map(repr, choices)))
    for path, (ok, expected) in RANGES.items():
        if not ok(_get(config, path)):
            _fail(path, _get(config, path), expected)
    data, model, train = config.data, config.model, config.train
    buckets = tuple(data.buckets)
    if not buckets or min(buckets) <= 0 or list(buckets) != sorted(set(buckets)):
        _fail("data.buckets", buckets, "increasing clip lengths in seconds, at least one")
    if data.corpus == "iemocap" and data.test_session not in range(1, 6):
        _fail("data.test_session", data.test_session, "an IEMOCAP session, 1..5")
    boundaries = tuple(train.step_boundaries)
    if not all(0 < b < 1 for b in boundaries) or list(boundaries) != sorted(boundaries):
        _fail("train.step_boundaries", boundaries, "increasing fractions of num_steps in (0, 1)")
    steps = tuple(train.profile_steps)
    if steps and (len(steps) != 2 or not 1 <= steps[0] <= steps[1]):
        _fail("train.profile_steps", steps, "(first, last) with 1 <= first <= last, or ()")
    if train.modality_dropout and model.fusion in ("audio", "video"):
        _fail("train.modality_dropout", train.modality_dropout,
              f"0 for a one-stream model (model.fusion={model.fusion!r})")
    if train.modality_dropout and train.modality_dropout_start >= train.num_steps:
        _fail("train.modality_dropout_start", train.modality_dropout_start,
              f"a step before train.num_steps ({train.num_steps}), or modality dropout never "
              "applies")
    if model.fusion_op != "fbp" and model.fusion not in ADAPTIVE_FUSIONS:
        _fail("model.fusion_op", model.fusion_op,
              f"'fbp' unless model.fusion is one of {', '.join(ADAPTIVE_FUSIONS)} (the "
              f"constructions that wrap an op); for a global {model.fusion_op} head set "
              f"model.fusion={model.fusion_op!r}")
    for op, fields in model.fusion_ops.items():
        for name, value in fields.items():
            if "dropout" in name and not 0 <= value < 1:
                _fail(f"model.fusion_ops.{op}.{name}", value, "in [0, 1)")
            if isinstance(value, int) and not isinstance(value, bool) and value < 1:
                _fail(f"model.fusion_ops.{op}.{name}", value, ">= 1")
    if model.fusion != "video" and _fcn_bins(model) < 1:
        _fail("model.frontend.n_bins", model.frontend.n_bins,
              "enough frequency bins for the audio FCN's strides and pools (none would be left "
              "after its last pool)")
    for path in ("train.frozen", "train.init_prefixes"):
        for prefix in _get(config, path):
            if prefix.split("/")[0] not in PARAM_GROUPS:
                _fail(path, tuple(_get(config, path)),
                      f"param-path prefixes under {', '.join(PARAM_GROUPS)} (several as "
                      f"--config.{path}=audio --config.{path}=video)")
    if model.fusion != "audio":  # the video stream reads what the cache serves as frames
        wants = "fer" if model.video.encoder == "identity" else "crops"
        if data.frame_input != wants:
            _fail("data.frame_input", data.frame_input,
                  f"{wants!r} for model.video.encoder={model.video.encoder!r}")
        if wants == "crops" and data.crop_size != model.video.crop_size:
            _fail("data.crop_size", data.crop_size,
                  f"model.video.crop_size ({model.video.crop_size}): the model reads the "
                  "crops that prepare writes")
