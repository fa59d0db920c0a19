"""Tucker, MUTAN and BLOCK against their PyTorch transcriptions of block.bootstrap.pytorch (float64
truth), BLOCK's chunk sizes, and the modules' contract: dropout only when not deterministic,
bf16, jit/vmap, finite gradients at zero, errors on bad settings."""

import jax
import numpy as np
import pytest

from avfbp_jax.ops.tucker import Bilinear, Block, Mutan, Tucker, chunk_sizes

pytest.importorskip("torch")
import fusion_checks as checks  # noqa: E402

from tools.torch_twins import block_fusions as tb  # noqa: E402

# (ours, twin, settings, input sizes): small odd shapes covering every option.
SMALL = [
    (Tucker, tb.Tucker, {"mm_dim": 6, "normalize": True}, (7, 5)),
    (Mutan, tb.Mutan, {"mm_dim": 9, "rank": 4}, (7, 5)),
    (Mutan, tb.Mutan, {"mm_dim": 9, "rank": 4, "normalize": True, "shared": True}, (6, 6)),
    (Block, tb.Block, {"mm_dim": 23, "chunks": 4, "rank": 3}, (7, 5)),  # sizes 6, 6, 6, 5
    # Sizes 2, 1, 1, 1 (get_sizes_list's negative-last-size branch), normalised after the
    # concatenation: a block of size 1 normalised alone is a constant +-1 with zero gradient.
    (Block, tb.Block, {"mm_dim": 5, "chunks": 4, "rank": 2, "shared": True,
                       "pos_norm": "after_cat"}, (6, 6)),
    (Block, tb.Block, {"mm_dim": 4, "chunks": 3, "rank": 2}, (7, 5)),  # sizes 2, 2, 0
]
# One small, normalised setting per module for the contract tests.
CONTRACT = [(Tucker, {"mm_dim": 6, "normalize": True}), (Mutan, {"mm_dim": 9, "rank": 4,
            "normalize": True}), (Block, {"mm_dim": 11, "chunks": 2, "rank": 3})]


def test_chunk_sizes_follow_the_reference():
    assert chunk_sizes(1600, 20) == [80] * 20
    assert chunk_sizes(1600, 18) == [89] * 17 + [87]
    assert chunk_sizes(10, 7) == [2, 2, 2, 1, 1, 1, 1]  # negative last size, redistributed
    assert chunk_sizes(5, 4) == [2, 1, 1, 1]
    assert chunk_sizes(10, 6) == [2, 2, 2, 2, 2, 0]
    assert chunk_sizes(4, 3) == [2, 2, 0]
    for dim in range(1, 40):
        for chunks in range(1, dim + 1):
            assert chunk_sizes(dim, chunks) == tb.get_sizes_list(dim, chunks), (dim, chunks)
    with pytest.raises(ValueError, match="cannot be split"):
        chunk_sizes(3, 5)


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")  # torch, empty chunk
@pytest.mark.parametrize("ours, ref, kw, dims", SMALL,
                         ids=[f"{o.__name__}-{i}" for i, (o, *_) in enumerate(SMALL)])
def test_matches_reference_small(ours, ref, kw, dims):
    x, y = checks.inputs(3, *dims)
    checks.assert_matches_twin(ours(4, **kw), ref(list(dims), 4, **kw), x, y)


@pytest.mark.slow
def test_block_matches_reference_at_reference_size():
    # The reference defaults (mm_dim 1600, chunks 20, rank 15, before_cat); m, n: this model's
    # pooled audio and video sizes.
    x, y = checks.inputs(8, 256, 128, seed=1)
    checks.assert_matches_twin(Block(64), tb.Block([256, 128], 64), x, y, float32_grads=False)


@pytest.mark.slow
def test_mutan_matches_reference_at_reference_size():
    x, y = checks.inputs(8, 256, 128, seed=2)  # mm_dim 1600, rank 15: 77M parameters
    checks.assert_matches_twin(Mutan(64, normalize=True), tb.Mutan([256, 128], 64, normalize=True),
                               x, y, float32_grads=False)


@pytest.mark.slow
def test_tucker_matches_reference_at_usable_size():
    # The default mm_dim 1600 makes a 4.1e9-parameter core; 235 is the reference's VQA 2.0 size.
    x, y = checks.inputs(8, 256, 128, seed=3)
    checks.assert_matches_twin(Tucker(64, mm_dim=235, normalize=True),
                               tb.Tucker([256, 128], 64, mm_dim=235, normalize=True), x, y,
                               float32_grads=False)


def test_bilinear_init_matches_torch_bounds():
    a, b = checks.inputs(1, 6, 7)
    params = Bilinear(5).init(jax.random.key(0), a, b)["params"]
    # torch.nn.Bilinear(6, 7, 5): weight (5, 6, 7) and bias ~ U(+-1/sqrt(6)).
    kernel, bias = (np.abs(np.asarray(params[k])) for k in ("kernel", "bias"))
    assert kernel.shape == (6, 7, 5)
    assert 0.8 / np.sqrt(6) < kernel.max() <= 1 / np.sqrt(6) and bias.max() <= 1 / np.sqrt(6)


@pytest.mark.parametrize("module, kw", CONTRACT, ids=[m.__name__ for m, _ in CONTRACT])
def test_dropout_only_when_not_deterministic(module, kw):
    x, y = checks.inputs(3, 7, 5)
    make = lambda **more: module(4, **kw, **more)
    params = {"params": checks.torch_like_params(make(), x, y)}
    checks.assert_dropout_only_when_not_deterministic(make, params, x, y)


@pytest.mark.parametrize("module, kw", CONTRACT, ids=[m.__name__ for m, _ in CONTRACT])
def test_bf16_jit_vmap_and_finite_gradients_at_zero(module, kw):
    x, y = checks.inputs(3, 7, 5, lead=(2,))
    make = lambda **more: module(4, **kw, **more)
    params = {"params": checks.torch_like_params(make(), x, y)}
    assert jax.eval_shape(make().apply, params, x, y).shape == (2, 3, 4)
    checks.assert_bf16_jit_vmap_and_finite_at_zero(make, params, x, y)


@pytest.mark.parametrize("module, kw, match", [
    (Block, {"pos_norm": "middle"}, "pos_norm"),
    (Block, {"mm_dim": 3, "chunks": 5}, "cannot be split"),
    (Block, {"mm_dim": 10, "shared": True}, "shared"),
    (Mutan, {"mm_dim": 10, "shared": True}, "shared"),
    (Mutan, {"mm_dim": 10, "rank": 0}, "rank"),
    (Tucker, {"mm_dim": 0}, "mm_dim"),
])
def test_bad_settings_are_rejected(module, kw, match):
    x, y = checks.inputs(2, 7, 5)
    with pytest.raises(ValueError, match=match):
        module(4, **kw).init(jax.random.key(0), x, y)
