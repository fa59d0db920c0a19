"""What the bilinear pooling kernels share: signed square root, L2 normalisation, column check,
torch.nn.Linear's initialisation and a Dense layer built like it, torch activations by name.

`ops.fbp` (XLA), `ops.fbp_pallas` (fused) and the other members of the bilinear fusion family
import these from here, so the kernels form a tree rather than importing each other.
"""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

# Floor on |z| in the derivative of the signed square root: d sqrt(|z|) / dz = 0.5 / sqrt(|z|)
# is unbounded at 0, so it is evaluated at max(|z|, floor) there (at most 5e5).
SQRT_GRAD_FLOOR = 1e-12
# Floor on the L2 norm (torch.nn.functional.normalize's eps, as in the original MFB code).
NORM_FLOOR = 1e-12


@jax.custom_jvp
def signed_sqrt(z: jax.Array) -> jax.Array:
    """sign(z) * sqrt(|z|), with a derivative that stays finite where z == 0."""
    return jnp.sign(z) * jnp.sqrt(jnp.abs(z))


def signed_sqrt_slope(z: jax.Array) -> jax.Array:
    """d signed_sqrt(z) / dz, evaluated at max(|z|, SQRT_GRAD_FLOOR)."""
    return 0.5 * lax.rsqrt(jnp.maximum(jnp.abs(z), SQRT_GRAD_FLOOR))


@signed_sqrt.defjvp
def _signed_sqrt_jvp(primals, tangents):
    (z,), (dz,) = primals, tangents
    return signed_sqrt(z), dz * signed_sqrt_slope(z)


def l2_normalize(z: jax.Array, axis: int = -1, floor: float = NORM_FLOOR) -> jax.Array:
    """z / max(||z||_2, floor) along `axis`; gradients stay finite for an all-zero row."""
    sq = jnp.sum(jnp.square(z), axis=axis, keepdims=True)
    # max() before sqrt: the sqrt is never evaluated at 0, so its gradient stays finite.
    return z * lax.rsqrt(jnp.maximum(sq, floor * floor))


def shared_columns(caller: str, w_x: jax.Array, w_y: jax.Array, k: int) -> int:
    """k*o, the column count w_x and w_y must share; raises naming `caller` otherwise."""
    ko = w_x.shape[-1]
    if w_y.shape[-1] != ko or ko % k:
        raise ValueError(f"{caller}: w_x {w_x.shape} and w_y {w_y.shape} must both have k*o "
                         f"columns with k={k}")
    return ko


def torch_linear_init(fan_in: int):
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): torch.nn.Linear's initialisation of its bias and (by
    kaiming_uniform with a = sqrt(5)) of its weight, as in the MFB and block.bootstrap code.

    Non-zero FBP biases matter: with zero biases a per-example scale on x or y factors out of
    the product and is cancelled by the L2 normalisation.
    """
    bound = 1.0 / math.sqrt(max(fan_in, 1))

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def accumulation_dtype(dtype: jnp.dtype) -> jnp.dtype:
    """float32 for bfloat16 / float32 compute, float64 for float64 (tests under x64)."""
    return jnp.promote_types(dtype, jnp.float32)


def torch_dense(features: int, fan_in: int, dtype: jnp.dtype, name: str) -> nn.Dense:
    """torch.nn.Linear(fan_in, features) as a Flax Dense: float32 kernel (fan_in, features) and
    bias, both initialised by `torch_linear_init`; the GEMM runs in `dtype` and returns its
    float32 accumulation (`accumulation_dtype`), to which the bias (cast to `dtype`) is added."""
    gemm = functools.partial(lax.dot_general, preferred_element_type=accumulation_dtype(dtype))
    return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32,
                    kernel_init=torch_linear_init(fan_in), bias_init=torch_linear_init(fan_in),
                    dot_general=gemm, name=name)


# The torch.nn.functional activations the block.bootstrap fusions name (activ_input,
# activ_output), with torch's defaults.
_TORCH_ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid,
                      "leaky_relu": jax.nn.leaky_relu}


def torch_activation(setting: str, name: str | None):
    """The activation torch.nn.functional calls `name`; identity for None or "" (the block
    fusions' "no activation")."""
    if not name:
        return lambda v: v
    if name not in _TORCH_ACTIVATIONS:
        raise ValueError(f"{setting}={name!r}; expected None or one of "
                         f"{sorted(_TORCH_ACTIVATIONS)}")
    return _TORCH_ACTIVATIONS[name]
