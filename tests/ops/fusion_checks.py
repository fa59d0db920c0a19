"""Checks shared by the fusion modules' tests (modules called as module(x, y, *, deterministic)).

`assert_matches_twin`: against the module's PyTorch twin, the output and the gradients of
<out, g> wrt x, y and every parameter, twice: in float64 (ours with dtype float64 under x64,
against the twin in float64: the same function to F64_REL) and in float32 (ours as given,
through twin_check.assert_matches_reference). The float32 gradient check can be left out where
it cannot decide: through the signed square root, rounding error in z is scaled by 1 / sqrt|z|,
so at the reference sizes some tiny |z| makes the float32 gradients of ours and of the twin
alike mostly rounding noise (measured on BLOCK: per-chunk errors of either 0.1 to 10 times the
other's, same spread both ways).
"""

import jax
import jax.numpy as jnp
import numpy as np
import torch
from twin_check import assert_matches_reference, relative_error

from tools.torch_twins.block_fusions import forward_backward

F64_REL = 1e-9


def inputs(b: int, m: int, n: int, seed: int = 0, lead: tuple[int, ...] = ()):
    """Standard-normal float32 x (*lead, b, m) and y (*lead, b, n)."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((*lead, b, m)).astype(np.float32),
            rng.standard_normal((*lead, b, n)).astype(np.float32))


def torch_like_params(module, x, y, seed: int = 0):
    """`module`'s parameters drawn in numpy as torch initialises them (kernel (in..., out) and
    bias ~ U(+-1/sqrt(in)), in = the kernel's first axis): no XLA compilation of an init."""
    shapes = jax.eval_shape(module.init, jax.random.key(0), x, y)["params"]
    rng = np.random.default_rng(seed)

    def draw(leaves):
        bound = 1 / np.sqrt(leaves["kernel"].shape[0])
        return {k: rng.uniform(-bound, bound, v.shape).astype(np.float32)
                for k, v in leaves.items()}

    return {name: draw(leaves) for name, leaves in shapes.items()}


def _ours(module, params, x, y, g):
    """(output, d x, d y, d params) of <module(x, y), g>, as numpy (one compiled program)."""

    @jax.jit
    def run(p, a, b, g):
        out, vjp = jax.vjp(lambda *args: module.apply({"params": args[0]}, *args[1:]), p, a, b)
        d_params, dx, dy = vjp(g.astype(out.dtype))
        return out, dx, dy, d_params

    return jax.tree.map(np.asarray, run(params, x, y, g))


def _pairs(ours, ref):
    """(name, ours, ref) for the output, d x, d y and each parameter gradient."""
    assert set(ours[3]) == set(ref[3]), "parameter modules differ from the twin's"
    rows = list(zip(("output", "d x", "d y"), ours[:3], ref[:3], strict=True))
    return rows + [(f"d {mod}.{leaf}", grad, ref[3][mod][leaf])
                   for mod, leaves in ours[3].items() for leaf, grad in leaves.items()]


def assert_matches_twin(module, twin, x: np.ndarray, y: np.ndarray, seed: int = 0,
                        float32_grads: bool = True) -> None:
    """Draws `module`'s params for (x, y), loads them into `twin` (dropout off) and compares
    the two in float64 and in float32 (see the module docstring)."""
    params = torch_like_params(module, x, y, seed)
    g = np.random.default_rng(seed + 1).standard_normal(
        jax.eval_shape(module.apply, {"params": params}, x, y).shape).astype(np.float32)
    ref64 = forward_backward(twin, params, x, y, g, torch.float64)
    with jax.enable_x64(True):
        as64 = lambda t: jax.tree.map(lambda a: np.asarray(a, np.float64), t)
        ours64 = _ours(module.clone(dtype=jnp.float64), as64(params), as64(x), as64(y), g)
    for name, ours, ref in _pairs(ours64, ref64):
        assert ours.dtype == np.float64, name
        err = relative_error(ours, ref)
        assert err <= F64_REL, f"{name} (float64): relative error {err:.3g} > {F64_REL:.3g}"
    ref32 = forward_backward(twin, params, x, y, g, torch.float32)
    ours32 = _ours(module, params, x, y, g)
    for (name, ours, r64), (_, _, r32) in zip(_pairs(ours32, ref64), _pairs(ours32, ref32),
                                              strict=True):
        if float32_grads or name == "output":
            assert_matches_reference(ours, r64, r32, name)


def assert_dropout_only_when_not_deterministic(make, params, x, y,
                                               sites=("dropout_input", "dropout_pre_lin",
                                                      "dropout_output")) -> None:
    """make(**rates) -> module. With every dropout site at 0.3 the output equals the
    dropout-free one when deterministic; when not, each site on its own changes it, and two
    "dropout" keys give two outputs."""
    rates = dict.fromkeys(sites, 0.3)

    @jax.jit  # one program for all the variants: one compilation
    def variants(params, x, y):
        def apply(rates, key=None):
            rngs = {} if key is None else {"dropout": jax.random.key(key)}
            return make(**rates).apply(params, x, y, deterministic=key is None, rngs=rngs)

        singles = [apply({site: 0.3}, key=1) for site in sites]
        return apply({}), apply(rates), apply(rates, key=1), apply(rates, key=2), singles

    plain, off, on1, on2, singles = variants(params, x, y)
    np.testing.assert_array_equal(off, plain)
    for site, out in zip(sites, singles, strict=True):
        assert np.abs(out - plain).max() > 1e-3, site
    assert np.abs(on1 - on2).max() > 1e-3


def assert_bf16_jit_vmap_and_finite_at_zero(make, params, x, y) -> None:
    """make(**settings) -> module, x (2, b, m), y (2, b, n). Eager float32 output against:
    bfloat16 (within 3% of the largest output), jit, vmap over the first axis and the inputs
    flattened to (2 b, .); and finite gradients (inputs and params) at all-zero inputs."""
    apply = make().apply
    out = apply(params, x, y)  # eager

    @jax.jit  # one program for the rest: one compilation
    def variants(params, x, y):
        half = make(dtype=jnp.bfloat16).apply(params, x, y)
        mapped = jax.vmap(lambda a, b: apply(params, a, b))(x, y)
        flat = apply(params, x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1]))
        loss = lambda p, a, b: jnp.sum(apply(p, a, b))
        zero_grads = jax.grad(loss, argnums=(0, 1, 2))(params, 0 * x, 0 * y)
        return apply(params, x, y), half, mapped, flat.reshape(out.shape), zero_grads

    jitted, half, mapped, flat, zero_grads = variants(params, x, y)
    assert out.dtype == jnp.float32 and half.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(half, np.float32), out, atol=3e-2 * np.abs(out).max())
    for other in (jitted, mapped, flat):
        np.testing.assert_allclose(other, out, rtol=1e-5, atol=1e-6)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(zero_grads))
