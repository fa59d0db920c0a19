"""Tests of the MTCNN port (avfbp_jax.data.mtcnn, mtcnn_nets) and its converter (mtcnn_convert).

Always on: the converter on a synthetic weights file in mtcnn 0.1.1's layout, checked against an
independent NumPy forward pass in the original's transposed-image convention; the pipeline's
NMS, squaring, regression, crops and batching. With converted weights present (see
`python3 -m avfbp_jax.commands.mtcnn_convert`): the port against the original TensorFlow
mtcnn's saved network outputs and detections (fixtures/mtcnn_reference.npz, made by
make_mtcnn_fixture.py).
"""

import json
import zipfile
from pathlib import Path

import jax
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from avfbp_jax import pinned_wheel
from avfbp_jax.commands import mtcnn_convert
from avfbp_jax.data import mtcnn, mtcnn_nets

FIXTURE = Path(__file__).parent / "fixtures" / "mtcnn_reference.npz"

# The Keras weight lists in mtcnn 0.1.1's mtcnn_weights.npy: (shape, kind) in list order.
_CONV_PRELU = lambda k, i, o: [((k, k, i, o), "w"), ((o,), "b"), ((1, 1, o), "a")]
KERAS_SHAPES = {
    "pnet": _CONV_PRELU(3, 3, 10) + _CONV_PRELU(3, 10, 16) + _CONV_PRELU(3, 16, 32)
    + [((1, 1, 32, 2), "w"), ((2,), "b"), ((1, 1, 32, 4), "w"), ((4,), "b")],
    "rnet": _CONV_PRELU(3, 3, 28) + _CONV_PRELU(3, 28, 48) + _CONV_PRELU(2, 48, 64)
    + [((576, 128), "w"), ((128,), "b"), ((128,), "a"),
       ((128, 2), "w"), ((2,), "b"), ((128, 4), "w"), ((4,), "b")],
    "onet": _CONV_PRELU(3, 3, 32) + _CONV_PRELU(3, 32, 64) + _CONV_PRELU(3, 64, 64)
    + _CONV_PRELU(2, 64, 128)
    + [((1152, 256), "w"), ((256,), "b"), ((256,), "a"), ((256, 2), "w"), ((2,), "b"),
       ((256, 4), "w"), ((4,), "b"), ((256, 10), "w"), ((10,), "b")],
}


def random_keras_weights(seed: int = 0) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    draw = {"w": lambda s: rng.normal(0, 1, s) / np.sqrt(np.prod(s[:-1])),
            "b": lambda s: rng.normal(0, 0.1, s), "a": lambda s: rng.uniform(0, 0.5, s)}
    return {net: [draw[kind](shape).astype(np.float32) for shape, kind in layers]
            for net, layers in KERAS_SHAPES.items()}


def write_npy(path: Path, weights: dict) -> Path:
    np.save(path, np.array(weights, dtype=object), allow_pickle=True)  # as the wheel's file
    return path


# --- an independent NumPy forward pass, in the original's layout (images transposed) ---

def _conv(x, kernel, bias):
    k = kernel.shape[0]
    return np.einsum("nabcij,ijco->nabo", sliding_window_view(x, (k, k), axis=(1, 2)),
                     kernel) + bias


def _pool(x, k, same):
    """TensorFlow max-pool, stride 2: 'SAME' pads -inf, more at the end than the start."""
    if same:
        pads = [(max((-(-n // 2) - 1) * 2 + k - n, 0),) for n in x.shape[1:3]]
        pads = [(p // 2, p - p // 2) for (p,) in pads]
        x = np.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-np.inf)
    return sliding_window_view(x, (k, k), axis=(1, 2))[:, ::2, ::2].max(axis=(-2, -1))


def _prelu(x, alpha):
    return np.where(x > 0, x, alpha.reshape(-1) * x)


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def numpy_nets(w: dict, images: dict[str, np.ndarray]) -> dict[str, dict]:
    """The original's nets on natural [N, H, W, 3] inputs: transposed in, outputs back."""
    x = images["pnet"].astype(np.float64).transpose(0, 2, 1, 3)
    p = w["pnet"]
    x = _pool(_prelu(_conv(x, p[0], p[1]), p[2]), 2, True)
    x = _prelu(_conv(_prelu(_conv(x, p[3], p[4]), p[5]), p[6], p[7]), p[8])
    out = {"pnet": {"probs": _softmax(_conv(x, p[9], p[10])).transpose(0, 2, 1, 3),
                    "box": _conv(x, p[11], p[12]).transpose(0, 2, 1, 3)}}
    r = w["rnet"]
    x = images["rnet"].astype(np.float64).transpose(0, 2, 1, 3)
    x = _pool(_prelu(_conv(x, r[0], r[1]), r[2]), 3, True)
    x = _pool(_prelu(_conv(x, r[3], r[4]), r[5]), 3, False)
    x = _prelu(_conv(x, r[6], r[7]), r[8]).reshape(len(x), -1)
    x = _prelu(x @ r[9] + r[10], r[11])
    out["rnet"] = {"probs": _softmax(x @ r[12] + r[13]), "box": x @ r[14] + r[15]}
    o = w["onet"]
    x = images["onet"].astype(np.float64).transpose(0, 2, 1, 3)
    x = _pool(_prelu(_conv(x, o[0], o[1]), o[2]), 3, True)
    x = _pool(_prelu(_conv(x, o[3], o[4]), o[5]), 3, False)
    x = _pool(_prelu(_conv(x, o[6], o[7]), o[8]), 2, True)
    x = _prelu(_conv(x, o[9], o[10]), o[11]).reshape(len(x), -1)
    x = _prelu(x @ o[12] + o[13], o[14])
    out["onet"] = {"probs": _softmax(x @ o[15] + o[16]), "box": x @ o[17] + o[18],
                   "landmarks": x @ o[19] + o[20]}
    return out


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    weights = random_keras_weights()
    path = write_npy(tmp_path_factory.mktemp("mtcnn") / "mtcnn_weights.npy", weights)
    return weights, path, mtcnn_convert.read_weights(path)


def test_port_matches_numpy_in_the_transposed_layout(synthetic):
    weights, _, params = synthetic
    rng = np.random.default_rng(1)
    images = {"pnet": rng.uniform(-1, 1, (2, 17, 23, 3)),  # not square: catches a transpose
              "rnet": rng.uniform(-1, 1, (3, 24, 24, 3)),
              "onet": rng.uniform(-1, 1, (3, 48, 48, 3))}
    want = numpy_nets(weights, images)
    for name, x in images.items():
        got = mtcnn.apply_net(name, params[name], x.astype(np.float32))
        assert got.keys() == want[name].keys()
        for key, value in got.items():
            np.testing.assert_allclose(value, want[name][key], atol=1e-4, err_msg=f"{name} {key}")


def test_converter_rejects_files_that_do_not_fit(tmp_path):
    weights = random_keras_weights()
    del weights["onet"]
    with pytest.raises(mtcnn_convert.ConversionError, match="no 'onet' weights"):
        mtcnn_convert.read_weights(write_npy(tmp_path / "missing.npy", weights))
    weights = random_keras_weights()
    weights["rnet"] = weights["rnet"][:-1]
    with pytest.raises(mtcnn_convert.ConversionError, match="rnet: 15 arrays"):
        mtcnn_convert.read_weights(write_npy(tmp_path / "short.npy", weights))
    weights = random_keras_weights()
    weights["pnet"][0] = np.zeros((3, 3, 3, 11), np.float32)
    with pytest.raises(mtcnn_convert.ConversionError, match="do not fit the port"):
        mtcnn_convert.read_weights(write_npy(tmp_path / "wide.npy", weights))
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(mtcnn_convert.ConversionError, match="junk.npy"):
        mtcnn_convert.read_weights(tmp_path / "junk.npy")


def test_convert_checks_the_wheel_and_writes_loadable_weights(synthetic, tmp_path, monkeypatch,
                                                              capsys):
    _, npy, params = synthetic
    wheel = tmp_path / "mtcnn-0.1.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(npy, mtcnn_convert.WHEEL_MEMBER)
    out = tmp_path / "weights"
    assert mtcnn_convert.main(["--wheel", str(wheel), "--out", str(out)]) == 1
    assert "is not the pinned" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == [wheel.name]  # nothing written
    with pytest.raises(FileNotFoundError, match="python3 -m avfbp_jax.commands.mtcnn_convert"):
        mtcnn_nets.load_params(out)
    sha256 = pinned_wheel.sha256_of(npy)
    for _ in range(2):  # the second conversion replaces the first
        mtcnn_convert.convert(out, wheel=wheel, sha256=sha256)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([wheel.name, "weights"])
    meta = json.loads((out / mtcnn_nets.META_FILE).read_text())
    assert meta["sha256"] == sha256 and meta["num_params"] == 495850
    monkeypatch.setenv(mtcnn_nets.WEIGHTS_ENV, str(out))
    jax.tree.map(np.testing.assert_array_equal, mtcnn_nets.load_params(), params)


def test_default_weights_dir(monkeypatch, tmp_path):
    monkeypatch.delenv(mtcnn_nets.WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert mtcnn_nets.default_weights_dir() == tmp_path / "avfbp-jax" / "mtcnn"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert mtcnn_nets.default_weights_dir() == Path.home() / ".cache" / "avfbp-jax" / "mtcnn"
    monkeypatch.setenv(mtcnn_nets.WEIGHTS_ENV, str(tmp_path / "w"))
    assert mtcnn_nets.default_weights_dir() == tmp_path / "w"


# --- the pipeline's steps ---

def test_pyramid_scales():
    # 100 px, faces >= 20 px: first scale 0.6 (60 px), then x0.709 while the side stays >= 12.
    assert mtcnn.pyramid_scales(100, 150) == pytest.approx([0.6 * 0.709**k for k in range(5)])
    assert mtcnn.pyramid_scales(19, 500) == []


def test_nms_keeps_the_best_of_each_overlapping_group():
    boxes = np.array([[0, 0, 9, 9, 0.8],      # overlaps the next one with IoU 81/119 = 0.68
                      [1, 1, 10, 10, 0.9],
                      [2, 2, 5, 5, 0.95],      # inside both: IoU small, overlap "min" 1
                      [50, 50, 59, 59, 0.7]])
    np.testing.assert_array_equal(mtcnn.nms(boxes, 0.5, "union"), [2, 1, 3])
    np.testing.assert_array_equal(mtcnn.nms(boxes, 0.7, "union"), [2, 1, 0, 3])
    np.testing.assert_array_equal(mtcnn.nms(boxes, 0.7, "min"), [2, 3])
    assert mtcnn.nms(np.empty((0, 5)), 0.5).shape == (0,)


def test_proposals_map_cells_to_windows_and_keep_the_lone_cell_quirk():
    probs = np.zeros((4, 5))
    offsets = np.arange(4 * 5 * 4, dtype=np.float64).reshape(4, 5, 4)
    probs[1, 3] = probs[2, 0] = 0.9
    rows = mtcnn.proposals(probs, offsets, 0.5, 0.6)
    # By x, then y; cell (x, y) covers fix((2x + 1) / s) .. fix((2x + 12) / s).
    np.testing.assert_array_equal(rows[:, :5], [[2, 10, 24, 32, 0.9], [14, 6, 36, 28, 0.9]])
    np.testing.assert_array_equal(rows[:, 5:], [offsets[2, 0], offsets[1, 3]])
    probs[2, 0] = 0.0  # a lone cell: offsets from the mirrored column, as the original
    np.testing.assert_array_equal(mtcnn.proposals(probs, offsets, 0.5, 0.6)[:, 5:],
                                  [offsets[1, 1]])
    assert mtcnn.proposals(probs, offsets, 0.5, 0.95).shape == (0, 9)


def test_square_and_regress():
    box = np.array([[10.0, 20.0, 30.0, 60.0, 0.9]])
    np.testing.assert_array_equal(mtcnn.square(box), [[0.0, 20.0, 40.0, 60.0, 0.9]])
    moved = mtcnn.regress(box, np.array([[0.1, -0.1, 0.0, 0.5]]))  # w + 1 = 21, h + 1 = 41
    np.testing.assert_allclose(moved, [[12.1, 15.9, 30.0, 80.5, 0.9]])


def test_crop_resize_uses_the_one_based_corners_and_pads_with_zeros():
    image = np.arange(10 * 12, dtype=np.uint8).reshape(10, 12, 1).repeat(3, -1)
    # Corners (3, 2)-(6, 5) cover columns 2..5 and rows 1..4; no resampling at 4x4.
    crop = mtcnn.crop_resize(image, np.array([[3.0, 2.0, 6.0, 5.0]]), 4)
    np.testing.assert_array_equal(crop[0], image[1:5, 2:6])
    # A box over the top-left corner: zeros where it leaves the image.
    crop = mtcnn.crop_resize(image, np.array([[-1.0, 0.0, 2.0, 3.0]]), 4)[0, ..., 0]
    np.testing.assert_array_equal(crop[:, :2], 0)
    np.testing.assert_array_equal(crop[0], 0)
    np.testing.assert_array_equal(crop[1:, 2:], image[0:3, 0:2, 0])
    assert not mtcnn.crop_resize(image, np.array([[5.0, 5.0, 3.0, 3.0]]), 4).any()


def test_run_net_pads_batches_without_changing_rows(synthetic):
    _, _, params = synthetic
    crops = np.random.default_rng(2).uniform(-1, 1, (130, 24, 24, 3)).astype(np.float32)
    chunked = mtcnn.run_net("rnet", params["rnet"], crops)  # 128 rows, then 2 padded to 8
    assert chunked["probs"].shape == (130, 2) and chunked["box"].shape == (130, 4)
    alone = mtcnn.apply_net("rnet", params["rnet"], crops[125:])
    for key in ("probs", "box"):
        np.testing.assert_allclose(chunked[key][125:], alone[key], atol=1e-5)


def test_detect_checks_its_input(synthetic):
    _, _, params = synthetic
    detector = mtcnn.MtcnnDetector(params)
    with pytest.raises(ValueError, match="grayscale"):
        detector.detect(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        detector.detect_all(np.zeros((8, 8), np.float32))
    assert detector.detect(np.zeros((10, 10), np.uint8)) is None  # smaller than a 20-px face


# --- with the real converted weights ---

@pytest.fixture(scope="module")
def real_params():
    try:
        return mtcnn_nets.load_params()
    except FileNotFoundError:
        pytest.skip(f"converted MTCNN weights not found in {mtcnn_nets.default_weights_dir()}: "
                    f"run `{mtcnn_nets.CONVERT_COMMAND}` (or point {mtcnn_nets.WEIGHTS_ENV} "
                    f"at them)")


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(FIXTURE))


def test_nets_match_the_original(real_params, reference):
    for name in mtcnn_nets.NETS:
        x = mtcnn_nets.normalize(reference[f"{name}/input"])
        got = mtcnn.apply_net(name, real_params[name], x[None] if name == "pnet" else x)
        for key, value in got.items():
            np.testing.assert_allclose(value[0] if name == "pnet" else value,
                                       reference[f"{name}/{key}"], atol=1e-4, rtol=0,
                                       err_msg=f"{name} {key}")


@pytest.mark.slow
def test_detections_match_the_original(real_params, reference):
    detector = mtcnn.MtcnnDetector(real_params)
    names = [k.removeprefix("image/") for k in reference if k.startswith("image/")]
    assert len(names) == 11
    for name in names:
        faces = detector.detect_all(reference[f"image/{name}"])
        want = reference[f"final/{name}/boxes"]
        assert len(faces) == len(want), name
        if not faces:
            continue
        boxes = np.array([f.box for f in faces])
        np.testing.assert_allclose(boxes, reference[f"final/{name}/api_boxes"], atol=1,
                                   err_msg=name)
        np.testing.assert_allclose([f.confidence for f in faces], want[:, 4], atol=1e-4)
        landmarks = reference[f"final/{name}/landmarks"].reshape(-1, 2, 5).transpose(0, 2, 1)
        np.testing.assert_allclose(np.stack([f.landmarks for f in faces]), landmarks, atol=0.5,
                                   err_msg=name)


def test_detect_finds_the_face_in_a_gray_frame(real_params, reference):
    detector = mtcnn.MtcnnDetector(real_params)
    gray = reference["image/astronaut"]
    x, y, w, h = detector.detect(gray)
    face = detector.detect_all(gray)[0]
    assert (x, y, w, h) == face.box
    for px, py in face.landmarks:  # eyes, nose and mouth inside the box
        assert x <= px < x + w and y <= py < y + h
    assert detector.detect(reference["image/lfw_nonface100"]) is None
    assert detector.detect(np.full((120, 160), 128, np.uint8)) is None
