"""MLB against its PyTorch transcription of block.bootstrap.pytorch (float64 truth), and its
contract: dropout only when not deterministic, bf16, jit/vmap, finite gradients at zero."""

import jax
import numpy as np
import pytest

from avfbp_jax.ops.mlb import MLB

pytest.importorskip("torch")
import fusion_checks as checks  # noqa: E402

from tools.torch_twins import block_fusions as tb  # noqa: E402


@pytest.mark.parametrize("kw", [
    {},  # relu / relu, no normalisation (the reference defaults)
    {"normalize": True},  # relu inputs: z has exact zeros under the signed sqrt
    {"normalize": True, "activ_input": "tanh", "activ_output": None},
    {"activ_input": "sigmoid", "activ_output": "tanh"},
])
def test_matches_reference_small(kw):
    x, y = checks.inputs(3, 7, 5)
    checks.assert_matches_twin(MLB(4, mm_dim=9, **kw), tb.MLB([7, 5], 4, mm_dim=9, **kw), x, y)


def test_matches_reference_at_reference_size():
    # mm_dim 1200 (the reference default); m, n: this model's pooled audio and video sizes.
    x, y = checks.inputs(8, 256, 128, seed=1)
    checks.assert_matches_twin(MLB(64, normalize=True), tb.MLB([256, 128], 64, normalize=True),
                               x, y, float32_grads=False)


def test_init_matches_torch_bounds():
    x, y = checks.inputs(3, 7, 5)
    params = MLB(4, mm_dim=9).init(jax.random.key(0), x, y)["params"]
    for name, fan_in in [("linear0", 7), ("linear1", 5), ("linear_out", 9)]:
        bound = 1 / np.sqrt(fan_in)  # torch.nn.Linear: U(-bound, bound), weight and bias
        kernel, bias = (np.abs(np.asarray(params[name][k])) for k in ("kernel", "bias"))
        assert 0.8 * bound < kernel.max() <= bound and bias.max() <= bound, name


def test_dropout_only_when_not_deterministic():
    x, y = checks.inputs(3, 7, 5)
    make = lambda **more: MLB(4, mm_dim=9, activ_output=None, **more)
    params = {"params": checks.torch_like_params(make(), x, y)}
    checks.assert_dropout_only_when_not_deterministic(make, params, x, y)


@pytest.mark.parametrize("activ_output", ["relu", None])
def test_bf16_jit_vmap_and_finite_gradients_at_zero(activ_output):
    x, y = checks.inputs(3, 7, 5, lead=(2,))
    make = lambda **more: MLB(4, mm_dim=9, normalize=True, activ_output=activ_output, **more)
    params = {"params": checks.torch_like_params(make(), x, y)}
    assert jax.eval_shape(make().apply, params, x, y).shape == (2, 3, 4)
    checks.assert_bf16_jit_vmap_and_finite_at_zero(make, params, x, y)


def test_bad_activation_is_rejected():
    x, y = checks.inputs(2, 3, 3)
    with pytest.raises(ValueError, match="activ_input"):
        MLB(4, activ_input="swish").init(jax.random.key(0), x, y)
