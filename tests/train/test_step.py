"""The sharded train step: 8 devices agree with 1, loss formula, freezing, per-step RNG; on a GPU
(tests marked `gpu`, deselected by default) the GPU step equals the CPU step and does not
recompile.

The GPU tests need jax to see the GPU and the CPU: tests/conftest.py sets JAX_PLATFORMS=cpu
unless it is set, so run them as `JAX_PLATFORMS= python3 -m pytest -m gpu` (empty: every
platform); they skip when no GPU is visible.
"""

import contextlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from jax.sharding import Mesh

from avfbp_jax.models.model import AVModel, example_batch
from avfbp_jax.ops.fbp_mosaic import MOSAIC_GPU_SUPPORTED
from avfbp_jax.train import optimizer, parallel
from avfbp_jax.train.modality_dropout import drop_modalities
from avfbp_jax.train.state import create_train_state
from avfbp_jax.train.step import make_eval_step, make_train_step, weighted_cross_entropy
from tests.train.conftest import tiny_model_config, tiny_train_config


def _batches(cfg, n, batch_size=8):
    out = []
    for i in range(n):
        b = example_batch(cfg, batch_size, seconds=1.0, num_frames=6, seed=i)
        b["audio_len"][: batch_size // 2] = 9000  # ragged lengths and masked frames
        b["frame_len"][: batch_size // 2] = 4
        b["frame_mask"][:, 4:] = False
        b["frame_mask"][1, 2] = False
        b["weight"][-1] = 0.0  # one padding row
        out.append(b)
    return out


def _run(cfg, tcfg, mesh, batches, step=None):
    model = AVModel(config=cfg)
    schedule = optimizer.make_schedule(tcfg)
    tx = optimizer.make_optimizer(tcfg, schedule)
    state = create_train_state(model, tx, batches[0], seed=0, mesh=mesh)
    step = step or make_train_step(model, tx, schedule, mesh, seed=0,
                                   label_smoothing=tcfg.label_smoothing)
    losses = []
    for b in batches:
        state, metrics = step(state, parallel.shard_batch(b, mesh))
        losses.append(float(metrics["loss"]))
    return state, losses


def test_weighted_cross_entropy_matches_formula():
    logits = jnp.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [5.0, 0.0, 0.0]])
    labels = jnp.array([0, 2, 1])
    weights = jnp.array([1.0, 2.0, 0.0])
    eps = 0.2
    logp = jax.nn.log_softmax(logits)
    target = (1 - eps) * jax.nn.one_hot(labels, 3) + eps / 3
    per = -(target * logp).sum(-1)
    expected = (per * weights).sum() / weights.sum()
    loss, per_example = weighted_cross_entropy(logits, labels, weights, eps)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    np.testing.assert_allclose(per_example, per, rtol=1e-6)


def test_eight_devices_match_one_device():
    assert jax.device_count() == 8
    cfg, tcfg = tiny_model_config("amfbp"), tiny_train_config()
    tcfg.learning_rate = 1e-3  # Adam rescales tiny gradients: keep reduction-order noise small
    batches = _batches(cfg, 3)
    state8, losses8 = _run(cfg, tcfg, parallel.make_mesh(8), batches)
    state1, losses1 = _run(cfg, tcfg, parallel.make_mesh(1), batches)
    assert int(state8.step) == int(state1.step) == 3
    assert losses8[0] > 0 and np.all(np.isfinite(losses8))
    assert losses8[0] != losses8[-1]  # training moves
    np.testing.assert_allclose(losses8, losses1, rtol=1e-5, atol=1e-5)
    leaves8 = jax.tree.leaves(state8.params)
    leaves1 = jax.tree.leaves(state1.params)
    for a, b in zip(leaves8, leaves1, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
    p8 = state8.params["fusion"]["classifier"]["kernel"]
    assert p8.sharding.is_fully_replicated and len(p8.sharding.device_set) == 8


def test_padding_row_does_not_change_update():
    """A weight-0 row with any content leaves loss and update unchanged."""
    cfg, tcfg = tiny_model_config("gfbp"), tiny_train_config()
    mesh = parallel.make_mesh(1)
    b = _batches(cfg, 1)[0]
    other = {k: v.copy() for k, v in b.items()}
    other["audio"][-1] = np.random.default_rng(5).standard_normal(other["audio"].shape[1])
    other["label"][-1] = (b["label"][-1] + 1) % cfg.num_classes
    model, tx = AVModel(config=cfg), optimizer.make_optimizer(tcfg)
    step = make_train_step(model, tx, optimizer.make_schedule(tcfg), mesh, seed=0,
                           label_smoothing=tcfg.label_smoothing)
    s1, l1 = _run(cfg, tcfg, mesh, [b], step)
    s2, l2 = _run(cfg, tcfg, mesh, [other], step)
    assert l1 == l2
    for x, y in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_modality_dropout_is_the_step_on_the_masked_batch():
    """With train.modality_dropout the step equals the plain step on drop_modalities(batch) with
    the step's own key (so a resumed run drops the same streams), sharded over 8 devices."""
    cfg, tcfg = tiny_model_config("amfbp"), tiny_train_config()
    mesh = parallel.make_mesh(8)
    batches = _batches(cfg, 2)
    model, schedule = AVModel(config=cfg), optimizer.make_schedule(tcfg)
    tx = optimizer.make_optimizer(tcfg, schedule)
    dropping = make_train_step(model, tx, schedule, mesh, seed=0,
                               label_smoothing=tcfg.label_smoothing, modality_dropout=0.5)
    s1, l1 = _run(cfg, tcfg, mesh, batches, dropping)
    key = jax.random.fold_in(jax.random.key(0), 1)
    masked = [jax.device_get(drop_modalities(b, jax.random.fold_in(jax.random.fold_in(key, i), 1),
                                             0.5)) for i, b in enumerate(batches)]
    assert any(np.any(m["audio_len"] != b["audio_len"])
               for m, b in zip(masked, batches, strict=True))
    s2, l2 = _run(cfg, tcfg, mesh, masked)
    _, l0 = _run(cfg, tcfg, mesh, batches)
    np.testing.assert_allclose(l1, l2, rtol=1e-6)
    assert l1 != l0
    for x, y in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)


def test_modality_dropout_starts_at_its_step():
    """With train.modality_dropout_start = 1 the first step is the plain step and the second the
    step on drop_modalities(batch) with that step's key."""
    cfg, tcfg = tiny_model_config("amfbp"), tiny_train_config()
    mesh = parallel.make_mesh(1)
    batches = _batches(cfg, 2)
    model, schedule = AVModel(config=cfg), optimizer.make_schedule(tcfg)
    tx = optimizer.make_optimizer(tcfg, schedule)
    late = make_train_step(model, tx, schedule, mesh, seed=0, label_smoothing=tcfg.label_smoothing,
                           modality_dropout=0.5, modality_dropout_start=1)
    s1, l1 = _run(cfg, tcfg, mesh, batches, late)
    key = jax.random.fold_in(jax.random.key(0), 1)
    masked = jax.device_get(drop_modalities(batches[1], jax.random.fold_in(
        jax.random.fold_in(key, 1), 1), 0.5))
    assert np.any(masked["audio_len"] != batches[1]["audio_len"])
    s2, l2 = _run(cfg, tcfg, mesh, [batches[0], masked])
    np.testing.assert_allclose(l1, l2, rtol=1e-6)
    for x, y in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)


def test_frozen_prefix_keeps_params_and_others_move():
    cfg, tcfg = tiny_model_config("audio"), tiny_train_config()
    tcfg.frozen = ("audio",)
    mesh = parallel.make_mesh(1)
    batches = _batches(cfg, 2)
    model = AVModel(config=cfg)
    tx = optimizer.make_optimizer(tcfg)
    init = create_train_state(model, tx, batches[0], seed=0, mesh=mesh)
    before = jax.tree.map(np.asarray, init.params)
    state, _ = _run(cfg, tcfg, mesh, batches)
    for name in before:
        pairs = zip(jax.tree.leaves(before[name]), jax.tree.leaves(state.params[name]), strict=True)
        same = [np.array_equal(a, np.asarray(b)) for a, b in pairs]
        assert all(same) if name == "audio" else not any(same), name


def test_eval_step_returns_replicated_logits_and_weights():
    cfg = tiny_model_config("amfbp")
    mesh = parallel.make_mesh(8)
    b = _batches(cfg, 1)[0]
    model = AVModel(config=cfg)
    params = model.init({"params": jax.random.key(0)}, b, train=False)["params"]
    eval_step = make_eval_step(model, mesh)
    out = eval_step(parallel.replicate(params, mesh), parallel.shard_batch(b, mesh))
    ref, aux = model.apply({"params": params}, b, train=False)
    np.testing.assert_allclose(out["logits"], ref, rtol=1e-5, atol=1e-6)
    assert out["modality_weights"].shape == (8, 2)
    assert out["trunk_modality_weights"].shape == (8, cfg.num_trunks, 2)
    np.testing.assert_allclose(out["modality_weights"].sum(-1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("name", ["adamw", "sgd", "lamb"])
def test_optimizers_minimise_a_least_squares_problem(name):
    tcfg = tiny_train_config()
    tcfg.optimizer, tcfg.schedule, tcfg.warmup_steps = name, "constant", 0
    tcfg.learning_rate = 0.05
    a = jax.random.normal(jax.random.key(0), (16, 4))
    target = a @ jnp.array([1.0, -2.0, 0.5, 3.0])
    params = {"w": {"kernel": jnp.zeros((4, 1))}, "b": {"bias": jnp.zeros(())}}

    def loss(p):
        return jnp.mean((a @ p["w"]["kernel"][:, 0] + p["b"]["bias"] - target) ** 2)

    tx = optimizer.make_optimizer(tcfg)
    opt_state = tx.init(params)
    start = loss(params)
    for _ in range(100):
        updates, opt_state = tx.update(jax.grad(loss)(params), opt_state, params)
        params = optax.apply_updates(params, updates)
    assert loss(params) < 0.1 * start, (name, float(start), float(loss(params)))


def test_schedules_warmup_then_decay():
    tcfg = tiny_train_config()
    tcfg.num_steps, tcfg.warmup_steps, tcfg.learning_rate = 100, 10, 1.0
    cos = optimizer.make_schedule(tcfg)
    assert float(cos(0)) == 0.0 and float(cos(10)) == pytest.approx(1.0)
    assert float(cos(100)) == pytest.approx(tcfg.end_lr_factor)
    tcfg.schedule = "step"
    step = optimizer.make_schedule(tcfg)
    assert float(step(5)) == pytest.approx(0.5)
    assert float(step(59)) == pytest.approx(1.0)
    assert float(step(61)) == pytest.approx(0.1)
    assert float(step(90)) == pytest.approx(0.01)
    tcfg.schedule = "linear"
    with pytest.raises(ValueError, match="schedule"):
        optimizer.make_schedule(tcfg)


def test_clip_sees_only_trainable_gradients():
    tcfg = tiny_train_config()
    tcfg.frozen, tcfg.grad_clip_norm, tcfg.weight_decay = ("a",), 1.0, 0.0
    tcfg.optimizer, tcfg.momentum, tcfg.schedule, tcfg.warmup_steps = "sgd", 0.0, "constant", 0
    tcfg.learning_rate = 1.0
    tx = optimizer.make_optimizer(tcfg)
    params = {"a": jnp.zeros(2), "b": jnp.zeros(2)}
    grads = {"a": jnp.array([100.0, 0.0]), "b": jnp.array([0.3, 0.4])}
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_array_equal(updates["a"], 0.0)
    np.testing.assert_allclose(updates["b"], [-0.3, -0.4], rtol=1e-6)  # norm 0.5 < 1: unclipped
    assert optax.global_norm(updates) > 0


def test_frozen_paths_reach_into_subtrees():
    """A frozen prefix names a param path: "video/encoder" freezes a pretrained frame encoder
    and nothing else under "video"; "audio" still freezes the whole audio stream."""
    params = {"audio": {"w": 0.0}, "video": {"encoder": {"a": {"k": 0.0}}, "attention": {"k": 0.0}},
              "fusion": {"k": 0.0}}
    labels = optimizer.trainable_labels(params, ("video/encoder", "audio"))
    assert labels == {"audio": {"w": "frozen"},
                      "video": {"encoder": {"a": {"k": "frozen"}}, "attention": {"k": "trainable"}},
                      "fusion": {"k": "trainable"}}


# ----------------------------------------------------------------------------- GPU
def _gpu_devices() -> list:
    try:
        return jax.devices("gpu")
    except RuntimeError:  # no GPU backend, or JAX_PLATFORMS excludes it
        return []


def _has_cpu_backend() -> bool:
    try:
        return bool(jax.devices("cpu"))
    except RuntimeError:  # JAX_PLATFORMS=cuda
        return False


requires_gpu = pytest.mark.skipif(
    not _gpu_devices(), reason="no GPU visible to jax (run with JAX_PLATFORMS= to see it)")
requires_cpu_too = pytest.mark.skipif(
    not _has_cpu_backend(), reason="the CPU reference needs the CPU backend (JAX_PLATFORMS=)")


def _sgd_config() -> ml_collections.ConfigDict:
    """Plain SGD with learning rate 1, no decay or clipping: new params = params - grads, so the
    parameter change after one step is exactly minus the gradient."""
    tcfg = tiny_train_config()
    tcfg.optimizer, tcfg.momentum, tcfg.schedule, tcfg.warmup_steps = "sgd", 0.0, "constant", 0
    tcfg.weight_decay, tcfg.grad_clip_norm, tcfg.learning_rate = 0.0, 0.0, 1.0
    return tcfg


def _gpu_test_model(dtype: str, fbp_impl: str = "xla", dropout: float = 0.1
                    ) -> ml_collections.ConfigDict:
    cfg = tiny_model_config("amfbp")
    cfg.fbp_k, cfg.fbp_o, cfg.dtype, cfg.fbp_impl, cfg.fbp_dropout = 5, 64, dtype, fbp_impl, dropout
    return cfg


def _step_on(devices, host_state, batch, cfg, precision=None):
    """One train step of model `cfg` on a mesh over `devices` from a host copy of the state:
    (grads, metrics)."""
    tcfg = _sgd_config()
    mesh = Mesh(np.asarray(devices), (parallel.DATA_AXIS,))
    schedule = optimizer.make_schedule(tcfg)
    tx = optimizer.make_optimizer(tcfg, schedule)
    step = make_train_step(AVModel(config=cfg), tx, schedule, mesh, seed=0,
                           label_smoothing=tcfg.label_smoothing)
    state = jax.device_put(host_state, parallel.replicated(mesh))
    ctx = jax.default_matmul_precision(precision) if precision else contextlib.nullcontext()
    with ctx:
        new, metrics = step(state, parallel.shard_batch(batch, mesh))
    leaf = jax.tree.leaves(new.params)[0]
    assert leaf.sharding.device_set == set(devices)  # the step ran where it was asked to
    grads = jax.tree.map(lambda old, p: np.asarray(old, np.float64) - np.asarray(p, np.float64),
                         host_state.params, jax.device_get(new.params))
    return grads, jax.device_get(metrics)


def _rel(a, b) -> float:
    """||a - b|| / ||b|| over all leaves of two gradient trees."""
    diff = sum(float(np.sum((x - y) ** 2)) for x, y in
               zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))
    ref = sum(float(np.sum(y ** 2)) for y in jax.tree.leaves(b))
    return (diff / ref) ** 0.5


@pytest.mark.gpu
@requires_gpu
@requires_cpu_too
@pytest.mark.parametrize("fbp_impl", ["xla", "pallas", pytest.param("pallas_mosaic", marks=(
    pytest.mark.skipif(not MOSAIC_GPU_SUPPORTED, reason="Mosaic GPU Pallas needs jax >= 0.11")))])
def test_gpu_step_equals_cpu_step(fbp_impl):
    """One jitted, sharded step on the GPU(s) against the same step on one CPU device (XLA FBP),
    from the same initial state (made on the CPU) and batch (ragged lengths, masked frames, a
    padding row; FBP dropout on with the XLA kernel). With fbp_impl "pallas" the GPU step runs
    the fused Triton kernel, with "pallas_mosaic" the fused Mosaic GPU kernel (jax >= 0.11, a
    Hopper GPU).

    Tolerances: f32 at matmul precision "highest" (no TF32) must match to reduction-order noise:
    loss to 1e-5 relative, gradients to 3e-3 (||g_gpu - g_cpu|| / ||g_cpu||; on this batch the
    same step on 4 CPU devices and on 1 differs by 3e-4, mostly in the frame projection). bf16
    compute carries its own rounding (the CPU bf16 step's gradients differ from the f32 ones by
    24% on this model), so the GPU bf16 step is held to the CPU bf16 step: loss to 1e-2
    relative, and gradients no farther from the f32 reference than 1.5x the CPU bf16 step's
    distance plus 0.02. The Mosaic GPU kernel runs float32 as TF32 whatever the precision: the
    CPU step with the FBP forward's x, y, W rounded to TF32 differs from the exact one by 2e-4
    in the loss and 1.8e-2 in the gradients (the signed sqrt amplifies rounding near z = 0), so
    its f32 bounds are 1e-3 and 5e-2.
    """
    gpus, cpu = _gpu_devices(), jax.devices("cpu")[:1]
    # XLA's FBP with dropout 0.1 (its masks must match across devices too); the fused kernels'
    # hash mask differs from jax.random's, so they are compared without dropout.
    dropout = 0.1 if fbp_impl == "xla" else 0.0
    ref = {d: _gpu_test_model(d, "xla", dropout) for d in ("float32", "bfloat16")}
    test = {d: _gpu_test_model(d, fbp_impl, dropout) for d in ("float32", "bfloat16")}
    batch = _batches(ref["float32"], 1, batch_size=8 * len(gpus))[0]
    tx = optimizer.make_optimizer(_sgd_config())
    host_state = jax.device_get(create_train_state(
        AVModel(config=ref["float32"]), tx, batch, seed=0,
        mesh=Mesh(np.asarray(cpu), (parallel.DATA_AXIS,))))

    ref_g, ref_m = _step_on(cpu, host_state, batch, ref["float32"], "highest")
    gpu_g, gpu_m = _step_on(gpus, host_state, batch, test["float32"], "highest")
    for m in (ref_m, gpu_m):
        assert m["finite"] == 1.0 and np.isfinite(m["grad_norm"]) and m["grad_norm"] > 0
    loss_tol, grad_tol = (1e-3, 5e-2) if fbp_impl == "pallas_mosaic" else (1e-5, 3e-3)
    np.testing.assert_allclose(gpu_m["loss"], ref_m["loss"], rtol=loss_tol)
    err32 = _rel(gpu_g, ref_g)
    assert err32 < grad_tol, err32

    cpu16_g, cpu16_m = _step_on(cpu, host_state, batch, ref["bfloat16"])
    gpu16_g, gpu16_m = _step_on(gpus, host_state, batch, test["bfloat16"])
    assert gpu16_m["finite"] == 1.0 and np.isfinite(gpu16_m["grad_norm"])
    np.testing.assert_allclose(gpu16_m["loss"], cpu16_m["loss"], rtol=1e-2)
    err16, cpu_err16 = _rel(gpu16_g, ref_g), _rel(cpu16_g, ref_g)
    assert err16 < 1.5 * cpu_err16 + 0.02, (err16, cpu_err16)


@pytest.mark.gpu
@requires_gpu
def test_gpu_step_does_not_recompile_after_warmup():
    """Two bucket shapes, bf16: after one step on each, six more steps alternating between them
    run with no further XLA compilation, and the state stays finite and on the GPU."""
    gpus = _gpu_devices()
    cfg, tcfg = _gpu_test_model("bfloat16"), tiny_train_config()
    mesh = Mesh(np.asarray(gpus), (parallel.DATA_AXIS,))
    b = 8 * len(gpus)
    shapes = [example_batch(cfg, b, seconds=s, num_frames=f, seed=i)
              for i, (s, f) in enumerate([(1.0, 10), (2.0, 20)])]
    model = AVModel(config=cfg)
    schedule = optimizer.make_schedule(tcfg)
    tx = optimizer.make_optimizer(tcfg, schedule)
    state = create_train_state(model, tx, shapes[0], seed=0, mesh=mesh)
    step = make_train_step(model, tx, schedule, mesh, seed=0,
                           label_smoothing=tcfg.label_smoothing)
    batches = [parallel.shard_batch(x, mesh) for x in shapes]
    for x in batches:
        state, metrics = step(state, x)
    jax.block_until_ready(metrics)
    compiles = []
    counting = [True]

    def on_event(name, duration, **_):
        if counting[0] and name == "/jax/core/compile/backend_compile_duration":
            compiles.append(duration)

    jax.monitoring.register_event_duration_secs_listener(on_event)
    try:
        for i in range(6):
            state, metrics = step(state, batches[i % 2])
        metrics = jax.device_get(metrics)
    finally:
        counting[0] = False
    assert compiles == []
    assert int(state.step) == 8 and metrics["finite"] == 1.0
    assert jax.tree.leaves(state.params)[0].sharding.device_set == set(gpus)
