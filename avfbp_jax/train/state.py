"""The train state (params, optimizer state, step) and its creation on a mesh."""

from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from avfbp_jax.train.parallel import replicated
from avfbp_jax.trees import check_fits


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: optimizer steps taken
    params: Any
    opt_state: Any


def _init_fn(model: flax.linen.Module, tx: optax.GradientTransformation) -> Callable:
    """(rng, example batch) -> the initial TrainState: params from the model, optimizer state."""

    def init(rng: jax.Array, batch: dict) -> TrainState:
        params_rng, dropout_rng = jax.random.split(rng)
        variables = model.init({"params": params_rng, "dropout": dropout_rng}, batch, train=False)
        params = variables["params"]
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    return init


def create_train_state(
    model: flax.linen.Module, tx: optax.GradientTransformation, example: dict, seed: int,
    mesh: Mesh,
) -> TrainState:
    """Initialises params from `seed` on an example batch, replicated over the mesh."""
    init = jax.jit(_init_fn(model, tx), out_shardings=replicated(mesh))
    return init(jax.random.key(seed), example)


def abstract_train_state(
    model: flax.linen.Module, tx: optax.GradientTransformation, example: dict, mesh: Mesh
) -> TrainState:
    """Shapes, dtypes and (replicated) shardings of the train state, without computing it.

    The restore target: Orbax lays a saved state onto these shardings, whatever device count
    wrote it.
    """
    shapes = jax.eval_shape(_init_fn(model, tx), jax.random.key(0), example)
    sharding = replicated(mesh)
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)


def copy_matching_params(params: dict, source: dict, prefixes: tuple[str, ...]) -> dict:
    """Returns `params` with every top-level subtree named in `prefixes` taken from `source`.

    Used to initialise a fused model from an audio-only run. Raises if a named subtree is
    missing from either side or its structure, shapes or dtypes differ (a width mismatch, say).
    """
    copied = dict(params)
    names = [n for n in params if n.startswith(tuple(prefixes))]
    if not names:
        raise ValueError(f"init_from: the model has no params starting with {prefixes}")
    for name in names:
        if name not in source:
            raise ValueError(
                f"init_from: source checkpoint has no params {name!r} (has {sorted(source)})"
            )
        check_fits(params[name], source[name],
                   f"init_from: params {name!r} of the source checkpoint do not fit this model "
                   "(are the stream widths the same?)")
        copied[name] = jax.tree.map(
            lambda old, new: jnp.asarray(new, old.dtype), params[name], source[name]
        )
    return copied
