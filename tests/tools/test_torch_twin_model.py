"""The PyTorch twin of the whole model and its train step (tools/torch_twins/) against ours.

Logits and the loss's gradients are compared, in float32, with ours and with the twin run in
float64 (the truth, tests/ops/twin_check.py): every fusion type on the tiny config, with recordings
of different lengths in one batch, and the paper-sized AM-FBP. A gradient leaf's error may also
reach 1e-8 of the largest gradient: a leaf that is ~0 because its terms cancel (the bias of
scores that go through a softmax) is float32 rounding of that size. The optimizer alone is compared
with optax on the same gradients; the whole step on params after two steps.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avfbp_jax.models.config import FUSION_OPS, FUSION_TYPES, model_config, tiny_model_config
from avfbp_jax.models.fusion import fixed_param_paths
from avfbp_jax.models.model import AVModel
from avfbp_jax.train import optimizer, parallel
from avfbp_jax.train.config import train_config
from avfbp_jax.train.state import TrainState
from avfbp_jax.train.step import make_train_step, weighted_cross_entropy
from tests.models.model_helpers import random_variables, varied_batch
from tests.ops.twin_check import assert_matches_reference, relative_error

torch = pytest.importorskip("torch")

from tools.torch_twins import model as twin_model  # noqa: E402 (needs torch)
from tools.torch_twins import step as twin_step  # noqa: E402

LABEL_SMOOTHING = 0.1
REL = 1e-4  # logits and gradients, float32, relative to the largest magnitude


def _flat(tree) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(str(k.key) for k in path): np.asarray(v) for path, v in leaves}


def _labelled(batch):
    batch["label"] = np.array([0, 3, 1], np.int32)
    batch["weight"] = np.array([1.0, 0.5, 1.0], np.float32)
    return batch


def _params(model, batch):
    """Random parameters; the FER port's batch-norm variances kept positive."""
    params = random_variables(model, batch)["params"]
    return jax.tree_util.tree_map_with_path(
        lambda path, v: np.abs(v) + 0.5 if path[-1].key == "var" else v, params)


def _ours(model, params, batch):
    """(logits, gradients of the loss) of our model in eval mode."""

    def loss(p):
        logits = model.apply({"params": p}, batch)[0]
        return weighted_cross_entropy(logits, batch["label"], batch["weight"],
                                      LABEL_SMOOTHING)[0], logits

    (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return np.asarray(logits), _flat(grads)


def _twin(cfg, params, batch, dtype):
    """(logits, gradients in our layout) of the twin in eval mode, in `dtype`."""
    twin = twin_model.AVModelTwin(cfg).to(dtype)
    twin_model.load_params(twin, params)
    tb = twin_model.to_torch(batch)
    logits = twin.eval()(tb)
    twin_step.weighted_cross_entropy(logits, tb["label"], tb["weight"],
                                     LABEL_SMOOTHING).backward()
    return logits.detach().numpy(), _flat(twin_model.flax_layout(twin, grads=True))


def _check(cfg, batch, grads: bool = True):
    model = AVModel(cfg)
    params = _params(model, batch)
    ours, our_grads = _ours(model, params, batch)
    t32, g32 = _twin(cfg, params, batch, torch.float32)
    t64, g64 = _twin(cfg, params, batch, torch.float64)
    assert relative_error(ours, t32) <= REL
    assert_matches_reference(ours, t64, t32, "logits", rel=REL)
    if not grads:
        return
    assert set(g64) <= set(our_grads)
    scale = max(np.max(np.abs(g)) for g in g64.values())
    for path, g in our_grads.items():
        if path in g64:  # twin_check's rule, with a floor on the largest gradient's scale
            ref64, ref32 = g64[path], g32[path]
            tol = max(REL * np.max(np.abs(ref64)), 2 * np.max(np.abs(ref32 - ref64)),
                      REL * 1e-4 * scale)
            assert np.max(np.abs(g - ref64)) <= tol, path
        else:  # not trained: the frozen FER encoder, MCB's sketches; zero gradient in ours
            assert path.startswith(("video/encoder/", *fixed_param_paths(cfg))), path
            assert not np.any(g), path


def test_amfbp_logits_and_gradients_equal_ours():
    cfg = tiny_model_config("amfbp")
    _check(cfg, _labelled(varied_batch(cfg)))


@pytest.mark.slow
@pytest.mark.parametrize("fusion", [f for f in FUSION_TYPES if f != "amfbp"])
def test_every_fusion_equals_ours(fusion):
    cfg = tiny_model_config(fusion)
    _check(cfg, _labelled(varied_batch(cfg)))


@pytest.mark.slow
@pytest.mark.parametrize("op", [op for op in FUSION_OPS if op != "fbp"])
def test_am_family_equals_ours(op):
    """AM-FBP's construction around every other member (AM-MFH, ...): the op applied to the
    [B, N, d] trunk vectors as well as the global ones."""
    cfg = tiny_model_config("amfbp", fusion_op=op)
    _check(cfg, _labelled(varied_batch(cfg)))


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [
    {"audio.attention": "2d", "video.attention": "softmax"},
    {"video.encoder": "identity"},
    {"video.encoder": "fer"},
])
def test_attention_and_encoder_variants_equal_ours(overrides):
    cfg = tiny_model_config("amfbp", **overrides)
    _check(cfg, _labelled(varied_batch(cfg)))


@pytest.mark.slow
def test_paper_sized_amfbp_equals_ours():
    cfg = model_config()
    batch = _labelled(varied_batch(cfg))
    _check(cfg, batch, grads=False)


def test_load_params_names_what_does_not_fit():
    cfg = tiny_model_config("gfbp")
    params = _params(AVModel(cfg), varied_batch(cfg))
    twin = twin_model.AVModelTwin(cfg)
    fusion = params["fusion"]
    with pytest.raises(ValueError, match="fusion/fbp/w_x has shape"):
        twin_model.load_params(twin, {**params, "fusion": {
            **fusion, "fbp": {**fusion["fbp"], "w_x": fusion["fbp"]["w_x"][:-1]}}})
    with pytest.raises(ValueError, match="no Flax parameter fusion/classifier/kernel"):
        twin_model.load_params(twin, {**params, "fusion": {
            **fusion, "classifier": {"bias": fusion["classifier"]["bias"]}}})
    with pytest.raises(ValueError, match="no place for"):
        twin_model.load_params(twin, {**params, "extra": {"kernel": np.zeros((2, 2))}})


def test_optimizer_equals_optax_on_the_same_gradients():
    """Clipping (active on odd steps), AdamW, the decay mask (a large decay so that it shows)
    and the warmup schedule, four steps, against optax: the twin's updates (params after -
    before) agree to 1e-3 of each leaf's largest update; float32 rounding of the parameters
    alone makes about 1e-4 of an update here (ulp(0.8) / lr)."""
    cfg = tiny_model_config("gfbp")
    tcfg = train_config()
    tcfg.warmup_steps, tcfg.weight_decay = 2, 0.5
    params = _params(AVModel(cfg), varied_batch(cfg))
    tx = optimizer.make_optimizer(tcfg)
    opt_state, update = tx.init(params), jax.jit(tx.update)
    twin = twin_model.AVModelTwin(cfg)
    twin_model.load_params(twin, params)
    step = twin_step.TwinStep(twin, tcfg)
    gen = torch.Generator().manual_seed(0)
    for i in range(4):
        before = _flat(twin_model.flax_layout(twin))
        grads = [torch.randn(p.shape, generator=gen) for p in twin.parameters()]
        norm = torch.sqrt(sum((g * g).sum() for g in grads))
        for p, g in zip(twin.parameters(), grads, strict=True):
            p.grad = g * (3.0 if i % 2 else 0.5) / norm
        updates, opt_state = update(twin_model.flax_layout(twin, grads=True), opt_state, params)
        params = jax.tree.map(jnp.add, params, updates)
        step.apply_gradients()
        ours, after = _flat(updates), _flat(twin_model.flax_layout(twin))
        for path, u in ours.items():
            assert relative_error(after[path] - before[path], u) <= 1e-3, (i, path)


@pytest.mark.slow
@pytest.mark.parametrize("compile_", [None, "aot_eager"])
def test_twin_step_equals_our_step(compile_):
    """Two steps from the same params on the same batch (dropout off, no warmup: learning rate
    1e-3). Params agree to 5e-4 of each leaf's largest magnitude and the updates to 1e-2 in
    relative L2 norm: Adam's update lr m / (sqrt(v) + eps) turns float32 rounding in gradients
    near zero into differences of up to lr (the gradients themselves agree to 1e-4)."""
    cfg = tiny_model_config("amfbp", fbp_dropout=0.0)
    tcfg = train_config()
    tcfg.warmup_steps = 0
    batch = _labelled(varied_batch(cfg))
    model = AVModel(cfg)
    params = _params(model, batch)
    tx = optimizer.make_optimizer(tcfg)
    ours = make_train_step(model, tx, optimizer.make_schedule(tcfg), parallel.make_mesh(1),
                           seed=0, label_smoothing=tcfg.label_smoothing)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))
    twin = twin_model.AVModelTwin(cfg)
    twin_model.load_params(twin, params)
    step = twin_step.TwinStep(twin, tcfg, compile_=compile_)
    tb = twin_model.to_torch(batch)
    start = _flat(params)
    for _ in range(2):
        state, metrics = ours(state, batch)
        loss = step(tb)
        assert float(loss) == pytest.approx(float(metrics["loss"]), rel=1e-5)
        a, b = _flat(state.params), _flat(twin_model.flax_layout(twin))
        for path in a:
            assert relative_error(b[path], a[path]) <= 5e-4, path
            du, dt = a[path] - start[path], b[path] - start[path]
            assert np.linalg.norm(dt - du) <= 1e-2 * np.linalg.norm(du), path
