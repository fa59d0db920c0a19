"""The jitted train and eval steps, sharded over the "data" mesh axis.

One function serves one device and many: the batch is sharded on "data", the state replicated,
and XLA inserts the gradient all-reduce. The loss is a weighted mean over the global batch, so a
sharded run computes the same numbers as one device with the same global batch. The model is
applied with the mesh current (`ops.device_rows.use_mesh`), so that what XLA cannot partition
(the Pallas FBP kernel, the audio FFT) runs on each device's own rows (`on_device_rows`).
"""

import time
from collections.abc import Callable

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from avfbp_jax.ops.device_rows import use_mesh
from avfbp_jax.train.modality_dropout import drop_modalities
from avfbp_jax.train.parallel import data_sharded, replicated
from avfbp_jax.train.perf import compiled_flops
from avfbp_jax.train.state import TrainState

# aux entries the eval step returns per example (when the fusion produces them).
EVAL_AUX_KEYS = ("modality_weights", "trunk_modality_weights", "trunk_has_data")


def weighted_cross_entropy(
    logits: jax.Array, labels: jax.Array, weights: jax.Array, label_smoothing: float = 0.0
) -> tuple[jax.Array, jax.Array]:
    """Softmax cross-entropy with label smoothing, averaged with per-example weights.

    Returns (loss, per-example loss). Padding rows (weight 0) contribute nothing.
    """
    num_classes = logits.shape[-1]
    targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
    per_example = optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)
    total = jnp.maximum(jnp.sum(weights), 1e-9)
    return jnp.sum(per_example * weights) / total, per_example


def make_train_step(
    model: flax.linen.Module,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    mesh: Mesh,
    *,
    seed: int,
    label_smoothing: float,
    modality_dropout: float = 0.0,
    modality_dropout_start: int = 0,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """Returns step(state, batch) -> (state, metrics), jitted with shardings; state is donated.

    Dropout randomness for step s is fold_in(key(seed), s), so a resumed run draws the same
    masks as an uninterrupted one; so does modality dropout (train.modality_dropout: per clip,
    its audio or its faces removed through the masks, see train.modality_dropout), applied from
    step `modality_dropout_start` on.
    """
    dropout_key = jax.random.fold_in(jax.random.key(seed), 1)

    def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        rng = jax.random.fold_in(dropout_key, state.step)
        if modality_dropout > 0:
            rate = jnp.where(state.step >= modality_dropout_start, modality_dropout, 0.0)
            batch = drop_modalities(batch, jax.random.fold_in(rng, 1), rate)

        def loss_fn(params):
            with use_mesh(mesh):
                logits, _ = model.apply(
                    {"params": params}, batch, train=True, rngs={"dropout": rng}
                )
            loss, _ = weighted_cross_entropy(
                logits, batch["label"], batch["weight"], label_smoothing
            )
            return loss, logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        weights = batch["weight"]
        correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
        metrics = {
            "loss": loss,
            "accuracy": jnp.sum(correct * weights) / jnp.maximum(jnp.sum(weights), 1e-9),
            "grad_norm": optax.global_norm(grads),
            "learning_rate": schedule(state.step),
            # 1.0 while loss and updated params are finite: a checkpoint is only saved if so.
            "finite": jnp.isfinite(loss).astype(jnp.float32) * jnp.all(jnp.array(
                [jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(params)])).astype(jnp.float32),
        }
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new_state, metrics

    return jax.jit(
        step,
        in_shardings=(replicated(mesh), data_sharded(mesh)),
        out_shardings=(replicated(mesh), replicated(mesh)),
        donate_argnums=(0,),
    )


class CompiledStep:
    """A jitted step compiled ahead of time, once per batch shape, and then called directly.

    It runs the executable jit would run, and records what throughput reporting needs: the
    seconds spent compiling (`compile_s`, all shapes so far; `last_compile_s`, the last call)
    and XLA's FLOP count per device of the executable that ran last (`last_flops`).
    """

    def __init__(self, jitted: Callable):
        self._jitted = jitted
        self._executables: dict[tuple, tuple[Callable, float]] = {}
        self.compile_s = self.last_compile_s = self.last_flops = 0.0

    def __call__(self, state: TrainState, batch: dict):
        key = tuple((k, v.shape, v.dtype) for k, v in sorted(batch.items()))
        self.last_compile_s = 0.0
        if key not in self._executables:
            start = time.perf_counter()
            executable = self._jitted.lower(state, batch).compile()
            self.last_compile_s = time.perf_counter() - start
            self.compile_s += self.last_compile_s
            self._executables[key] = (executable, compiled_flops(executable))
        executable, self.last_flops = self._executables[key]
        return executable(state, batch)


def make_eval_step(model: flax.linen.Module, mesh: Mesh) -> Callable[[dict, dict], dict]:
    """Returns eval(params, batch) -> {"logits", "loss", "label", "weight", modality weights}.

    Outputs are replicated so every process reads the whole global batch's predictions and
    labels (multi-host evaluation needs no gather).
    """

    def step(params, batch):
        with use_mesh(mesh):
            logits, aux = model.apply({"params": params}, batch, train=False)
        _, per_example = weighted_cross_entropy(logits, batch["label"], batch["weight"])
        out = {"logits": logits.astype(jnp.float32), "loss": per_example,
               "label": batch["label"], "weight": batch["weight"]}
        out.update({k: aux[k].astype(jnp.float32) for k in EVAL_AUX_KEYS if k in aux})
        return out

    return jax.jit(
        step, in_shardings=(replicated(mesh), data_sharded(mesh)), out_shardings=replicated(mesh)
    )
