"""The fused Pallas FBP kernel: the same function as ops.fbp, forward and gradients.

On CPU the kernel runs in Pallas interpret mode; the `gpu` tests (deselected by default, run with
`JAX_PLATFORMS=cuda python3 -m pytest -m gpu`) repeat the checks through Triton on a GPU.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avfbp_jax.ops import dropout_keep_mask, dropout_seed, fbp, fbp_pallas
from avfbp_jax.ops.bilinear_common import l2_normalize, signed_sqrt

TRITON_CALL = "__gpu$xla.gpu.triton"
# The Mosaic GPU custom call (not just "mosaic", which source locations may contain).
MOSAIC_CALL = "custom_call @mosaic_gpu"

on_gpu = pytest.mark.skipif(jax.default_backend() != "gpu",
                            reason="needs a GPU (run with JAX_PLATFORMS=cuda)")


def _inputs(seed=0, b=7, m=13, n=11, k=3, o=10, *, signed=True):
    """x, y, W_x, W_y, b_x, b_y as float32 numpy arrays.

    signed: zero-mean x, y and (lecun-scaled) W; some pooled z then lie near 0, where the signed
    sqrt's derivative 0.5 / sqrt|z| amplifies rounding: two float32 implementations that sum in
    different orders differ there by ~1e-4 in the gradients (ops.fbp itself is 5e-5 from float64
    at these shapes). Otherwise x, y ~ U(0.5, 1.5) and W ~ (N(0, 1) + 2) / m: every projection
    is near 2, z near 4k, and float32 rounding stays at 1e-7 in the gradients too.
    """
    rng = np.random.default_rng(seed)
    if signed:
        x, y = rng.standard_normal((b, m)), rng.standard_normal((b, n))
        w_x = rng.standard_normal((m, k * o)) / np.sqrt(m)
        w_y = rng.standard_normal((n, k * o)) / np.sqrt(n)
    else:
        x, y = rng.uniform(0.5, 1.5, (b, m)), rng.uniform(0.5, 1.5, (b, n))
        w_x = (rng.standard_normal((m, k * o)) + 2.0) / m
        w_y = (rng.standard_normal((n, k * o)) + 2.0) / n
    b_x, b_y = rng.uniform(-0.5, 0.5, k * o), rng.uniform(-0.5, 0.5, k * o)
    return tuple(a.astype(np.float32) for a in (x, y, w_x, w_y, b_x, b_y))


def _masked_reference(x, y, w_x, w_y, b_x, b_y, *, k, keep, rate):
    """FBP in plain jnp with the given keep mask (B, k*o) on the product."""
    p = (x @ w_x + b_x) * (y @ w_y + b_y)
    p = jnp.where(keep, p / (1.0 - rate), 0.0)
    z = p.reshape(p.shape[0], -1, k).sum(-1)
    return l2_normalize(signed_sqrt(z))


def _loss(f, **kwargs):
    """A scalar of f's output with distinct weights per entry, so every cotangent differs."""
    def loss(*args):
        z = f(*args, **kwargs).astype(jnp.float32)
        return jnp.sum(jnp.sin(3.0 * z) * jnp.arange(1.0, z.shape[-1] + 1))
    return loss


def _assert_close(got, want, tol):
    """Entrywise within tol, relative to each array's largest entry."""
    for g, w in zip(got, want, strict=True):
        w = np.asarray(w, np.float32)
        np.testing.assert_allclose(np.asarray(g, np.float32), w, rtol=tol,
                                   atol=tol * np.abs(w).max())


def _check_against_fbp(dims, bias, residuals, blocks, *, interpret, tol, signed_grad_tol):
    """fbp_pallas == fbp, forward and the gradients of all (four or six) inputs, under jit.

    Forward to tol on both kinds of `_inputs`; gradients to tol on unsigned inputs and to
    signed_grad_tol on signed ones (see `_inputs`).
    """
    b, m, n, k, o = dims
    block_b, block_o = blocks
    options = dict(k=k, residuals=residuals, interpret=interpret, block_b=block_b,
                   block_o=block_o)
    pallas = jax.jit(lambda *a: fbp_pallas(*a[:4], *(a[4:] or (None, None)), **options))
    xla = lambda *a: fbp(*a[:4], *(a[4:] or (None, None)), k=k)
    for signed, grad_tol in ((False, tol), (True, signed_grad_tol)):
        x, y, w_x, w_y, b_x, b_y = _inputs(1, b, m, n, k, o, signed=signed)
        args = (x, y, w_x, w_y) + ((b_x, b_y) if bias else ())
        _assert_close([pallas(*args)], [xla(*args)], tol)
        argnums = tuple(range(len(args)))
        got = jax.jit(jax.grad(_loss(pallas), argnums))(*args)
        _assert_close(got, jax.grad(_loss(xla), argnums)(*args), grad_tol)


CASES = [  # (B, m, n, k, o), bias, residuals, (block_b, block_o)
    ((7, 13, 11, 3, 10), True, "recompute", (None, None)),
    ((7, 13, 11, 5, 37), False, "keep", (None, None)),
    # Several row and unit tiles, two contraction chunks of x (m = 40 > 32), padding everywhere.
    ((37, 40, 11, 5, 37), True, "keep", (16, 16)),
    ((37, 40, 11, 5, 37), False, "recompute", (16, 16)),
]


@pytest.mark.parametrize("dims, bias, residuals, blocks", CASES)
def test_equals_fbp_forward_and_gradients(dims, bias, residuals, blocks):
    _check_against_fbp(dims, bias, residuals, blocks, interpret=True, tol=1e-5,
                       signed_grad_tol=1e-3)


def _check_dropout(residuals, *, interpret, tol):
    """With dropout: forward and all six gradients equal the jnp reference with the same mask."""
    b, m, n, k, o, rate = 37, 13, 11, 3, 37, 0.3
    args = _inputs(2, b, m, n, k, o, signed=False)
    rng = jax.random.key(5)
    keep = dropout_keep_mask(dropout_seed(rng), (b, k * o), rate)
    options = dict(k=k, dropout_rate=rate, dropout_rng=rng, residuals=residuals,
                   interpret=interpret, block_b=16, block_o=16)
    pallas = lambda *a: fbp_pallas(*a, **options)
    reference = lambda *a: _masked_reference(*a, k=k, keep=keep, rate=rate)
    _assert_close([jax.jit(pallas)(*args)], [reference(*args)], tol)
    got = jax.jit(jax.grad(_loss(pallas), tuple(range(6))))(*args)
    _assert_close(got, jax.grad(_loss(reference), tuple(range(6)))(*args), tol)
    # The mask made a difference: without it the output is fbp's.
    assert np.abs(np.asarray(pallas(*args)) - np.asarray(fbp(*args, k=k))).max() > 1e-2


@pytest.mark.parametrize("residuals", ["recompute", "keep"])
def test_dropout_equals_the_reference_with_the_same_hash_mask(residuals):
    _check_dropout(residuals, interpret=True, tol=1e-5)


def test_dropout_mask_drops_at_the_rate_independently():
    rate, shape = 0.1, (512, 1000)
    keep = np.asarray(dropout_keep_mask(dropout_seed(jax.random.key(0)), shape, rate))
    assert abs(1.0 - keep.mean() - rate) < 0.003  # 3.5 standard deviations of 512000 draws
    other = np.asarray(dropout_keep_mask(dropout_seed(jax.random.key(1)), shape, rate))
    assert abs((keep != other).mean() - 2 * rate * (1 - rate)) < 0.005  # seeds independent
    # Neighbouring rows and columns are independent too (the hash mixes both indices).
    assert abs((keep[1:] != keep[:-1]).mean() - 2 * rate * (1 - rate)) < 0.005
    assert abs((keep[:, 1:] != keep[:, :-1]).mean() - 2 * rate * (1 - rate)) < 0.005


def test_no_dropout_without_an_rng_or_a_rate():
    args = _inputs(3)
    plain = fbp(*args, k=3)
    _assert_close([fbp_pallas(*args, k=3, dropout_rate=0.5)], [plain], 1e-5)
    _assert_close([fbp_pallas(*args, k=3, dropout_rng=jax.random.key(0))], [plain], 1e-5)


def test_leading_shapes_vmap_and_grad_of_vmap():
    x, y, w_x, w_y, b_x, b_y = _inputs(4, b=6)
    weights = (w_x, w_y, b_x, b_y)
    batched = fbp(x, y, *weights, k=3)
    leading = fbp_pallas(x.reshape(2, 3, -1), y.reshape(2, 3, -1), *weights, k=3)
    per_example = jax.vmap(lambda a, b: fbp_pallas(a, b, *weights, k=3))(x, y)
    vmapped = jax.vmap(lambda a, b: fbp_pallas(a, b, *weights, k=3))(x.reshape(2, 3, -1),
                                                                      y.reshape(2, 3, -1))
    assert leading.shape == vmapped.shape == (2, 3, 10)
    _assert_close([leading.reshape(6, 10), per_example, vmapped.reshape(6, 10)], [batched] * 3,
                  1e-5)

    def loss(f):
        return _loss(lambda a, b, w: jax.vmap(lambda c, d: f(c, d, w, *weights[1:], k=3))(a, b))

    args = (x.reshape(2, 3, -1), y.reshape(2, 3, -1), w_x)
    _assert_close(jax.jit(jax.grad(loss(fbp_pallas), (0, 1, 2)))(*args),
                  jax.grad(loss(fbp), (0, 1, 2))(*args), 1e-5)


def _check_bf16(*, interpret):
    """bf16 inputs: a bf16 output, close to float32 forward and backward, and to fbp in bf16.

    bf16 keeps 8 significant bits (rounding 2**-9 = 2e-3 relative): x, y, W, the output and, in
    the backward, the cotangents of the projections and g_x, g_y are rounded to it. On unsigned
    `_inputs` (CPU, interpret mode) the output is 3.3e-3 and the gradients 9.4e-3 from float32,
    relative to the largest entry (fbp's own bf16 gradients: 7.9e-3); the bounds are 1e-2 and
    3e-2. On signed inputs both implementations are far from float32 near z = 0 but agree with
    each other to a bf16 rounding of the output (2**-8 absolute below 1).
    """
    args = _inputs(6, b=37, m=40, n=24, k=5, o=37, signed=False)
    x16, y16 = (jnp.asarray(a, jnp.bfloat16) for a in args[:2])
    pallas = lambda *a: fbp_pallas(*a, k=5, interpret=interpret)
    got = jax.jit(pallas)(x16, y16, *args[2:])
    assert got.dtype == jnp.bfloat16
    _assert_close([got], [fbp(*args, k=5)], 1e-2)
    grads = jax.jit(jax.grad(_loss(pallas), tuple(range(6))))(x16, y16, *args[2:])
    assert grads[0].dtype == jnp.bfloat16 and grads[2].dtype == jnp.float32
    _assert_close(grads, jax.grad(_loss(fbp, k=5), tuple(range(6)))(*args), 3e-2)
    signed = _inputs(6, b=37, m=40, n=24, k=5, o=37)
    x16, y16 = (jnp.asarray(a, jnp.bfloat16) for a in signed[:2])
    np.testing.assert_allclose(np.asarray(jax.jit(pallas)(x16, y16, *signed[2:]), np.float32),
                               np.asarray(fbp(x16, y16, *signed[2:], k=5), np.float32),
                               rtol=0, atol=2**-8)


def test_bf16_close_to_float32_and_to_fbp_in_bf16():
    _check_bf16(interpret=True)


def _exported_text(f, *args):
    """StableHLO of jit(f) exported for CUDA, lowered as for an H200 (jax >= 0.11 reads the GPU
    model from an abstract device where no GPU is attached)."""
    h200 = jax.sharding.AbstractDevice(device_kind="NVIDIA H200", num_cores=None,
                                       platform="gpu")
    mesh = jax.sharding.AbstractMesh((1,), ("x",), abstract_device=h200)
    checks = [jax.export.DisabledSafetyCheck.custom_call(TRITON_CALL)]
    with jax.sharding.use_abstract_mesh(mesh):
        exported = jax.export.export(jax.jit(f), platforms=["cuda"], disabled_checks=checks)(*args)
    return exported.mlir_module()


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_lowers_for_cuda_through_triton(dtype):
    """The GPU lowering (no GPU needed): Triton accepts the block shapes and dtypes at MFB size.

    The forward is one Triton kernel; the backward uses XLA dots, so one kernel in total.
    """
    b, m, n, k, o = 256, 512, 512, 5, 1000
    spec = jax.ShapeDtypeStruct
    args = (spec((b, m), dtype), spec((b, n), dtype), spec((m, k * o), jnp.float32),
            spec((n, k * o), jnp.float32), spec((k * o,), jnp.float32),
            spec((k * o,), jnp.float32))
    for residuals in ("recompute", "keep"):
        f = lambda *a, residuals=residuals: fbp_pallas(
            *a, k=k, dropout_rate=0.1, dropout_rng=jax.random.key(0), residuals=residuals,
            interpret=False)
        for text in (_exported_text(f, *args),
                     _exported_text(jax.grad(_loss(f), tuple(range(6))), *args)):
            assert text.count(TRITON_CALL) == 1
            assert MOSAIC_CALL not in text


def test_rejects_bad_arguments():
    x, y, w_x, w_y, b_x, b_y = _inputs(7)
    with pytest.raises(ValueError, match=r"k\*o"):
        fbp_pallas(x, y, w_x, w_y[:, :-1], None, None, k=3)
    with pytest.raises(ValueError, match="do not fit"):
        fbp_pallas(x[:, :-1], y, w_x, w_y, None, None, k=3)
    with pytest.raises(ValueError, match="same leading shape"):
        fbp_pallas(x[:-1], y, w_x, w_y, None, None, k=3)
    with pytest.raises(ValueError, match="residuals must be one of"):
        fbp_pallas(x, y, w_x, w_y, None, None, k=3, residuals="store")
    with pytest.raises(ValueError, match="block_o=24 must be a power of two"):
        fbp_pallas(x, y, w_x, w_y, None, None, k=3, block_o=24)


# ---------------------------------------------------------------------------------------------
# On a GPU, through Triton (not interpret mode).


@pytest.mark.gpu
@on_gpu
@pytest.mark.parametrize("dims, bias, residuals, blocks", CASES)
def test_gpu_equals_fbp_forward_and_gradients(dims, bias, residuals, blocks):
    # Full float32 dots on both sides: the default precision is TF32 on the GPU (checked below).
    with jax.default_matmul_precision("highest"):
        _check_against_fbp(dims, bias, residuals, blocks, interpret=False, tol=1e-5,
                           signed_grad_tol=1e-3)


@pytest.mark.gpu
@on_gpu
@pytest.mark.parametrize("residuals", ["recompute", "keep"])
def test_gpu_dropout_equals_the_reference_with_the_same_hash_mask(residuals):
    with jax.default_matmul_precision("highest"):
        _check_dropout(residuals, interpret=False, tol=1e-5)


@pytest.mark.gpu
@on_gpu
def test_gpu_bf16_close_to_float32_and_to_fbp_in_bf16():
    _check_bf16(interpret=False)


def _float64_fbp(x, y, w_x, w_y, b_x, b_y, k):
    x, y, w_x, w_y, b_x, b_y = (np.asarray(a, np.float64) for a in (x, y, w_x, w_y, b_x, b_y))
    p = (x @ w_x + b_x) * (y @ w_y + b_y)
    z = p.reshape(len(p), -1, k).sum(-1)
    z = np.sign(z) * np.sqrt(np.abs(z))
    return z / np.linalg.norm(z, axis=-1, keepdims=True)


# ||out - ref|| / ||ref|| against float64 at 512:512:5:1000. Estimated on CPU for these inputs
# (B = 1024) by rounding the operands as the GPU does and computing the rest in float64: float32
# (numpy, float32 throughout) 7.2e-7, TF32 (10-bit mantissa: float32's default precision on the
# GPU) 6.6e-4, bf16 (inputs, weights and output) 5.3e-3. The bounds leave 3-14x room.
MFB_BOUNDS = {"highest": 1e-5, "default": 2e-3, "bfloat16": 1.5e-2}


@pytest.mark.gpu
@on_gpu
@pytest.mark.parametrize("mode", list(MFB_BOUNDS))
def test_gpu_mfb_size_against_float64(mode):
    k = 5
    args = _inputs(8, b=8192, m=512, n=512, k=k, o=1000)
    want = _float64_fbp(*args, k)
    x, y = args[:2]
    if mode == "bfloat16":
        x, y = jnp.asarray(x, jnp.bfloat16), jnp.asarray(y, jnp.bfloat16)
    precision = "highest" if mode == "highest" else "default"
    with jax.default_matmul_precision(precision):
        got = np.asarray(jax.jit(lambda *a: fbp_pallas(*a, k=k))(x, y, *args[2:]), np.float64)
    error = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert error < MFB_BOUNDS[mode], f"{mode}: relative error {error:.2e}"


@pytest.mark.gpu
@on_gpu
@pytest.mark.parametrize("residuals", ["recompute", "keep"])
def test_gpu_mfb_size_gradients_equal_fbp(residuals):
    # Relative errors in CPU interpret mode at B = 1024: 2e-5 for g_x, g_y (the L2 norm cancels
    # most of their terms), 1e-7 for the weights and biases.
    args = _inputs(9, b=8192, m=512, n=512, k=5, o=1000, signed=False)  # see `_inputs`
    with jax.default_matmul_precision("highest"):
        got = jax.jit(jax.grad(_loss(fbp_pallas, k=5, residuals=residuals), tuple(range(6))))(
            *args)
        want = jax.jit(jax.grad(_loss(fbp, k=5), tuple(range(6))))(*args)
    for g, w in zip(got, want, strict=True):
        error = np.linalg.norm(np.asarray(g) - np.asarray(w)) / np.linalg.norm(np.asarray(w))
        assert error < 1e-4, f"{residuals}: relative gradient error {error:.2e}"
