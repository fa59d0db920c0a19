"""Fusion heads: AG-FBP weights matter, AM-FBP trunks follow valid lengths and skip empty ones."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_helpers import random_variables, tiny_config, varied_batch

from avfbp_jax.models.config import FUSION_OPS, model_config
from avfbp_jax.models.fusion import FAMILY, Adaptive, FusionHead
from avfbp_jax.models.model import AVModel
from avfbp_jax.ops import AttendedSequence, fbp, length_mask
from avfbp_jax.ops.fbp_mosaic import MOSAIC_GPU_SUPPORTED
from avfbp_jax.train.presets import synthetic_config


def _pair(seed=0, b=4, m=6, n=5):
    rng = np.random.default_rng(seed)
    return (jnp.asarray(rng.standard_normal((b, m)), jnp.float32),
            jnp.asarray(rng.standard_normal((b, n)), jnp.float32))


def _with_weights(params, w_a):
    """AG-FBP params whose MLP outputs the weights (w_a, 1 - w_a) for every input."""
    logit = float(np.log(w_a / (1 - w_a)))
    out = dict(params["weights_out"], kernel=jnp.zeros_like(params["weights_out"]["kernel"]),
               bias=jnp.array([logit, 0.0]))
    return dict(params, weights_out=out)


def test_adaptive_fbp_is_fbp_of_weighted_inputs():
    c_a, c_v = _pair()
    module = Adaptive(tiny_config(fbp_k=3, fbp_o=8, adaptive_hidden=4, fbp_dropout=0.1))
    params = module.init(jax.random.PRNGKey(0), c_a, c_v)["params"]
    z, weights = module.apply({"params": params}, c_a, c_v)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)
    f = params["fbp"]
    want = fbp(c_a * weights[:, :1], c_v * weights[:, 1:], f["w_x"], f["w_y"], f["b_x"], f["b_y"],
               k=3)
    np.testing.assert_allclose(z, want, rtol=1e-5, atol=1e-6)


def test_changing_the_adaptive_weights_changes_the_output():
    c_a, c_v = _pair(1)
    module = Adaptive(tiny_config(fbp_k=3, fbp_o=8, adaptive_hidden=4, fbp_dropout=0.0))
    params = module.init(jax.random.PRNGKey(0), c_a, c_v)["params"]
    outputs = {}
    for w_a in (0.2, 0.5, 0.8):
        z, weights = module.apply({"params": _with_weights(params, w_a)}, c_a, c_v)
        np.testing.assert_allclose(weights[:, 0], w_a, rtol=1e-5)
        outputs[w_a] = np.asarray(z)
    assert np.abs(outputs[0.2] - outputs[0.5]).max(axis=-1).min() > 1e-3  # every example
    assert np.abs(outputs[0.2] - outputs[0.8]).max(axis=-1).min() > 1e-2
    # Without the projection biases the weights would factor out and be normalised away: the
    # reason the biases are kept (and a check that this test can tell the two apart).
    no_bias = dict(params, fbp=dict(params["fbp"], b_x=jnp.zeros(24), b_y=jnp.zeros(24)))
    z2 = module.apply({"params": _with_weights(no_bias, 0.2)}, c_a, c_v)[0]
    z8 = module.apply({"params": _with_weights(no_bias, 0.8)}, c_a, c_v)[0]
    np.testing.assert_allclose(z2, z8, rtol=1e-4, atol=1e-6)


def _sequence(lengths, padded, channels, normalizer, seed):
    rng = np.random.default_rng(seed)
    b = len(lengths)
    lengths = jnp.asarray(lengths, jnp.int32)
    return AttendedSequence(
        features=jnp.asarray(rng.standard_normal((b, padded, channels)), jnp.float32),
        scores=jnp.asarray(rng.standard_normal((b, padded)), jnp.float32),
        mask=length_mask(lengths, padded),
        step=jnp.broadcast_to(jnp.arange(padded, dtype=jnp.int32), (b, padded)),
        length=lengths, normalizer=normalizer)


def _pool(seq, b, steps):
    """Reference attention pooling of recording b over the given time steps (numpy)."""
    if not steps:
        return np.zeros(seq.features.shape[-1], np.float32)
    s = np.asarray(seq.scores)[b, steps]
    w = np.exp(s - s.max()) if seq.normalizer == "softmax" else 1 / (1 + np.exp(-s))
    return (w / w.sum()) @ np.asarray(seq.features)[b, steps]


def test_amfbp_head_matches_a_per_trunk_reference():
    cfg = tiny_config("amfbp", num_trunks=3)
    audio_len, frame_len = [7, 0, 2], [5, 4, 0]
    audio = _sequence(audio_len, 9, 6, "softmax", 0)
    video = _sequence(frame_len, 10, 5, "sigmoid", 1)
    head = FusionHead(cfg)
    variables = random_variables(head, audio, video, train=False)
    logits, aux = head.apply(variables, audio, video, train=False)
    params = variables["params"]

    def adaptive(name, c_a, c_v):
        return Adaptive(cfg).apply(
            {"params": params[name]}, jnp.asarray(c_a)[None], jnp.asarray(c_v)[None])

    for b in range(3):
        def trunk(j, length):
            return [t for t in range(length) if j * length <= 3 * t < (j + 1) * length]

        z_global, w_global = adaptive("agfbp", _pool(audio, b, trunk(0, audio_len[b]) +
                                                     trunk(1, audio_len[b]) +
                                                     trunk(2, audio_len[b])),
                                      _pool(video, b, list(range(frame_len[b]))))
        trunk_z, has_data = [], []
        for j in range(3):
            a_steps, v_steps = trunk(j, audio_len[b]), trunk(j, frame_len[b])
            z, w = adaptive("trunk_agfbp", _pool(audio, b, a_steps), _pool(video, b, v_steps))
            np.testing.assert_allclose(aux["trunk_modality_weights"][b, j], w[0], rtol=1e-5)
            has_data.append(bool(a_steps or v_steps))
            if has_data[-1]:
                trunk_z.append(z[0])
        np.testing.assert_array_equal(aux["trunk_has_data"][b], has_data)
        z_trunks = np.mean(trunk_z, axis=0) if trunk_z else np.zeros(cfg.fbp_o)
        features = np.sqrt(cfg.fbp_o) * np.concatenate([z_global[0], z_trunks])
        want = features @ params["classifier"]["kernel"] + params["classifier"]["bias"]
        np.testing.assert_allclose(logits[b], want, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(aux["modality_weights"][b], w_global[0], rtol=1e-5)
    # Recording 2: audio steps 0 and 1 fall in trunks 0 and 1; trunk 2 is empty and left out.
    np.testing.assert_array_equal(aux["trunk_has_data"][2], [True, True, False])


def test_gfbp_head_feeds_the_classifier_fbp_times_sqrt_o():
    cfg = tiny_config("gfbp")
    audio = _sequence([7, 3], 9, 6, "softmax", 2)
    video = _sequence([5, 2], 10, 5, "sigmoid", 3)
    head = FusionHead(cfg)
    variables = random_variables(head, audio, video, train=False)
    logits, _ = head.apply(variables, audio, video, train=False)
    p = variables["params"]
    for b, (a_len, v_len) in enumerate(((7, 5), (3, 2))):
        f = p["fbp"]
        z = fbp(jnp.asarray(_pool(audio, b, list(range(a_len))))[None],
                jnp.asarray(_pool(video, b, list(range(v_len))))[None],
                f["w_x"], f["w_y"], f["b_x"], f["b_y"], k=cfg.fbp_k)[0]
        np.testing.assert_allclose(np.linalg.norm(z), 1.0, rtol=1e-5)  # unit L2 norm ...
        features = np.sqrt(cfg.fbp_o) * np.asarray(z)  # ... so unit RMS at the classifier
        np.testing.assert_allclose(np.sqrt(np.mean(features ** 2)), 1.0, rtol=1e-5)
        want = features @ p["classifier"]["kernel"] + p["classifier"]["bias"]
        np.testing.assert_allclose(logits[b], want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("impl", [
    "pallas",
    pytest.param("pallas_mosaic", marks=pytest.mark.skipif(
        not MOSAIC_GPU_SUPPORTED, reason=f"Mosaic GPU Pallas needs jax >= 0.11, found "
                                         f"{jax.__version__}")),
])
def test_fused_fbp_model_equals_xla_fbp_model(impl):
    """model.fbp_impl = "pallas" or "pallas_mosaic" (interpret mode here) gives the XLA model's
    outputs (eval)."""
    cfg = tiny_config("amfbp")  # global AG-FBP and the trunks' AG-FBP on (B, N) leading shapes
    batch = varied_batch(cfg)
    variables = random_variables(AVModel(cfg), batch, train=False)
    outputs, kernels = {}, {}
    for name in ("xla", impl):
        cfg.fbp_impl = name
        model = AVModel(cfg.copy_and_resolve_references())
        apply = jax.jit(functools.partial(model.apply, train=False))
        outputs[name] = apply(variables, batch)
        # The fused kernels' primitives: Triton's pallas_call, Mosaic GPU's mpmd_map (jax 0.11+).
        jaxpr = str(jax.make_jaxpr(apply)(variables, batch))
        kernels[name] = jaxpr.count("pallas_call") + jaxpr.count("mpmd_map")
    assert kernels == {"xla": 0, impl: 2}  # the global and the trunk AG-FBP
    (logits, aux), (want_logits, want_aux) = outputs[impl], outputs["xla"]
    assert np.abs(np.asarray(want_logits[0]) - np.asarray(want_logits[1])).max() > 1e-3
    np.testing.assert_allclose(logits, want_logits, rtol=1e-5, atol=1e-5)
    for name, value in want_aux.items():
        np.testing.assert_allclose(aux[name], value, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", FUSION_OPS[1:])
def test_fusion_ops_groups_hold_their_modules_arguments(op):
    """model.fusion_ops.<op> is exactly the module's constructor arguments (but dtype), at the
    module's reference defaults apart from output_dim (and Tucker's mm_dim), in every preset."""
    module = FAMILY[op]
    arguments = {f.name: f.default for f in dataclasses.fields(module)
                 if f.name not in ("parent", "name", "dtype")}
    group = model_config().fusion_ops[op].to_dict()
    assert set(group) == set(arguments)
    chosen = {"output_dim"} | ({"mm_dim"} if op == "tucker" else set())
    assert {k: v for k, v in group.items() if k not in chosen} == {
        k: v for k, v in arguments.items() if k not in chosen}
    for cfg in (tiny_config(), synthetic_config().model):
        assert set(cfg.fusion_ops[op].keys()) == set(arguments)


@pytest.mark.parametrize("op", FUSION_OPS[1:])
def test_adaptive_wraps_any_op_on_weighted_inputs(op):
    """AG-X is op X on (w_a c_a, w_v c_v), X's parameters named after it; the head's global op
    is the same module."""
    c_a, c_v = _pair(4)
    cfg = tiny_config("agfbp", fusion_op=op)
    module = Adaptive(cfg, op)
    params = module.init(jax.random.PRNGKey(0), c_a, c_v)["params"]
    assert set(params) == {"weights_hidden", "weights_out", op}
    z, weights = module.apply({"params": params}, c_a, c_v)
    want = FAMILY[op](**cfg.fusion_ops[op].to_dict()).apply(
        {"params": params[op]}, c_a * weights[:, :1], c_v * weights[:, 1:])
    np.testing.assert_allclose(z, want, rtol=1e-6, atol=1e-6)
    assert z.shape == (4, cfg.fusion_ops[op].output_dim) and np.all(np.isfinite(z))
