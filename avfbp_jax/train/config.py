"""Default training configuration (design brief section 4).

An experiment file composes `config.model` (models.config.model_config()), `config.data`
(data.config.data_config()), `config.train` (train_config()) and `config.seed`.
"""

import ml_collections

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
