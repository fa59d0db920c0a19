"""A Flax fusion module against its PyTorch twin (tools/torch_twins/mfh_mcb.py): output and
gradients (inputs and parameters), float64 and float32 twins, dropout masks replayed.

With dropout on, the masks our module draws are recorded (flax.linen.intercept_methods) and
the twin applies them, in call order, in place of its own: this checks where each dropout
sits and what it multiplies, with nothing random left to differ.
"""

import inspect

import flax.linen as nn
import jax
import numpy as np
import torch

from tests.ops.twin_check import assert_matches_reference
from tools.torch_twins.mfh_mcb import TorchMCB, TorchMFH, forward_backward, load_params

TWINS = {"MFH": TorchMFH, "MCB": TorchMCB}


def make_twin(module, m: int, n: int):
    """The twin of `module` for inputs of m and n features: the same settings, taken by the
    reference's names (which our modules' attributes share)."""
    twin = TWINS[type(module).__name__]
    names = list(inspect.signature(twin).parameters)[2:]  # after input_dims, output_dim
    return twin((m, n), module.output_dim, **{k: getattr(module, k) for k in names})


def _random_params(module, x, y, seed: int) -> dict:
    """Parameters shaped like `module`'s, drawn in numpy at the reference's ranges: layers
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) like torch.nn.Linear, sketches h in [0, mm_dim) and
    s = +-1 (compiling the module's init would cost more than the rest of a check)."""
    shapes = jax.eval_shape(module.init, jax.random.key(0), x, y)["params"]
    rng = np.random.default_rng(seed)
    params = {}
    for name, leaves in shapes.items():
        if name.startswith("sketch_"):
            size = leaves["h"].shape
            params[name] = {"h": rng.integers(0, module.mm_dim, size).astype(np.float32),
                            "s": rng.choice([-1.0, 1.0], size).astype(np.float32)}
        else:
            bound = 1.0 / np.sqrt(leaves["kernel"].shape[0])
            params[name] = {k: rng.uniform(-bound, bound, v.shape).astype(np.float32)
                            for k, v in leaves.items()}
    return params


def _ours(module, params, x, y, cotangent, rngs) -> tuple[dict, list[np.ndarray]]:
    """Our output and the gradients of <output, cotangent>, in forward_backward's layout, and
    the keep-masks of the dropouts applied, in call order (none when rngs is None)."""

    def run(params, x, y, cotangent, rngs):
        def f(p, a, b):
            masks = []

            def record(next_fun, args, kwargs, context):
                out = next_fun(*args, **kwargs)
                if isinstance(context.module, nn.Dropout) and out is not args[0]:
                    masks.append(out != 0)  # where the input is 0 either mask gives 0
                return out

            with nn.intercept_methods(record):
                out = module.apply({"params": p}, a, b, deterministic=rngs is None, rngs=rngs)
            return out, masks

        out, vjp, masks = jax.vjp(f, params, x, y, has_aux=True)
        d_params, d_x, d_y = vjp(cotangent)
        return {"out": out, "x": d_x, "y": d_y, "params": d_params}, masks

    ours, masks = jax.jit(run)(params, x, y, cotangent, rngs)
    return ours, [np.asarray(mask) for mask in masks]


def _replay(masks: list[np.ndarray]):
    """A twin `drop` that applies `masks` in order, scaled by 1 / (1 - p) like F.dropout."""
    queue = list(masks)

    def drop(v, p):
        return v * torch.tensor(queue.pop(0), dtype=v.dtype) / (1.0 - p)

    return drop, queue


def assert_matches_twin(module, x, y, *, seed: int = 0, rngs=None) -> None:
    """Draws parameters for `module` (numpy, `seed`), loads them into its twin in float64 and
    float32, and checks output and gradients with assert_matches_reference. With rngs
    ({"dropout": key}) the module runs with deterministic=False and the twin replays its
    masks. Params the twin lacks (MCB's sketches) must get exactly zero gradients."""
    params = _random_params(module, x, y, seed)
    out_shape = jax.eval_shape(module.apply, {"params": params}, x, y).shape
    cotangent = np.random.default_rng(seed).standard_normal(out_shape).astype(np.float32)
    ours, masks = _ours(module, params, x, y, cotangent, rngs)
    refs = []
    for dtype in (torch.float64, torch.float32):
        twin = make_twin(module, x.shape[-1], y.shape[-1]).to(dtype)
        load_params(twin, params)
        twin.train(rngs is not None)
        queue = []
        if masks:
            twin.drop, queue = _replay(masks)
        refs.append(forward_backward(twin, x, y, cotangent))
        assert not queue, f"the twin applied {len(masks) - len(queue)} of {len(masks)} masks"
    for path, leaf in jax.tree_util.tree_leaves_with_path(ours):
        keys = [k.key for k in path]
        ref64, ref32 = refs
        for key in keys:
            ref64, ref32 = ref64.get(key), ref32.get(key)
            if ref64 is None:
                break
        name = "/".join(keys)
        if ref64 is None:
            assert not np.any(np.asarray(leaf)), f"{name}: gradient of a fixed parameter"
        else:
            assert_matches_reference(leaf, ref64, ref32, name)
