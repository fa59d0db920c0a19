"""The optax optimizer and learning-rate schedule that a train config describes."""

from collections.abc import Sequence

import jax
import ml_collections
import optax

from avfbp_jax.train.config import OPTIMIZERS, SCHEDULES


def make_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warmup from 0 to `learning_rate`, then cosine, step or constant."""
    lr, warmup, total = config.learning_rate, config.warmup_steps, config.num_steps
    if config.schedule not in SCHEDULES:
        raise ValueError(f"train.schedule={config.schedule!r}; expected one of {SCHEDULES}")
    if config.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=lr,
            warmup_steps=warmup,
            decay_steps=max(total, warmup + 1),
            end_value=lr * config.end_lr_factor,
        )
    if config.schedule == "step":
        after = optax.piecewise_constant_schedule(
            lr,
            {max(int(f * total) - warmup, 1): config.step_factor for f in config.step_boundaries},
        )
    else:
        after = optax.constant_schedule(lr)
    warm = optax.linear_schedule(0.0, lr, max(warmup, 1))
    return optax.join_schedules([warm, after], [warmup])


def _decay_mask(params):
    """Weight decay on kernels only (ndim > 1), not on biases, scales or attention vectors."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def _base_optimizer(config: ml_collections.ConfigDict, schedule: optax.Schedule):
    if config.optimizer == "adamw":
        return optax.adamw(
            schedule, b1=config.momentum, b2=config.b2,
            weight_decay=config.weight_decay, mask=_decay_mask,
        )
    if config.optimizer == "lamb":
        return optax.lamb(
            schedule, b1=config.momentum, b2=config.b2,
            weight_decay=config.weight_decay, mask=_decay_mask,
        )
    if config.optimizer == "sgd":
        return optax.chain(
            optax.add_decayed_weights(config.weight_decay, mask=_decay_mask),
            optax.sgd(schedule, momentum=config.momentum),
        )
    raise ValueError(f"train.optimizer={config.optimizer!r}; expected one of {OPTIMIZERS}")


def trainable_labels(params, frozen: Sequence[str]):
    """Labels each leaf "frozen" if its param path ("video/encoder/...") starts with a frozen
    prefix ("audio" freezes the audio stream, "video/encoder" a pretrained frame encoder)."""
    frozen = tuple(frozen)

    def label(path, _):
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        return "frozen" if frozen and name.startswith(frozen) else "trainable"

    return jax.tree_util.tree_map_with_path(label, params)


def make_optimizer(
    config: ml_collections.ConfigDict, schedule: optax.Schedule | None = None,
    frozen: Sequence[str] | None = None,
) -> optax.GradientTransformation:
    """Clipping + the chosen optimizer on trainable params; zero updates on frozen ones.

    frozen: param-path prefixes to freeze (default config.frozen). Clipping sees only trainable
    gradients, so freezing a stream does not change the clip scale of the others.
    """
    frozen = tuple(config.frozen if frozen is None else frozen)
    schedule = schedule or make_schedule(config)
    parts = []
    if config.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
    parts.append(_base_optimizer(config, schedule))
    tx = optax.chain(*parts)
    if not frozen:
        return tx
    return optax.multi_transform(
        {"trainable": tx, "frozen": optax.set_to_zero()},
        lambda params: trainable_labels(params, frozen),
    )
