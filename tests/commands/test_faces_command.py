"""Tests of `avfbp faces` (avfbp_jax.commands.faces) on a real encoded video and a PNG image.

The FER port runs with randomly initialised weights written in the converter's format, so these
tests need no download; they check the command's plumbing against direct calls of the pieces.
"""

import json

import av
import cv2
import jax
import numpy as np
import pytest

from avfbp_jax.commands import cli, fer_convert
from avfbp_jax.data.faces import FaceCropper, fer_crop
from avfbp_jax.data.media import read_video
from avfbp_jax.models import fer

FPS = 5


def face_image() -> np.ndarray:
    skimage_data = pytest.importorskip("skimage.data")
    return cv2.resize(skimage_data.astronaut(), (320, 320))  # RGB


def write_video(path, frames_rgb):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height = frames_rgb[0].shape[1], frames_rgb[0].shape[0]
        stream.pix_fmt = "yuv420p"
        stream.options = {"qscale": "2"}
        for image in frames_rgb:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def random_params() -> dict:
    """Random weights in the port's tree: kernels scaled by fan-in, 1-d arrays in [0.5, 1.5]."""
    rng = np.random.default_rng(0)

    def draw(s):
        if len(s.shape) == 1:
            return rng.uniform(0.5, 1.5, s.shape).astype(np.float32)
        bound = np.sqrt(3.0 / np.prod(s.shape[:-1]))
        return rng.uniform(-bound, bound, s.shape).astype(np.float32)

    return jax.tree.map(draw, fer.param_shapes())


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces")
    weights = fer_convert.write_weights(random_params(), root / "weights", sha256="0" * 64,
                                        source="random")
    face = face_image()
    blank = np.full_like(face, 128)
    video = root / "clip.avi"
    write_video(video, [face, np.roll(face, 8, axis=1), face, blank, blank])
    image = root / "face.png"
    cv2.imwrite(str(image), cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
    bad = root / "broken.avi"
    bad.write_bytes(b"\x00" * 1000)
    return {"root": root, "weights": weights, "video": video, "image": image, "bad": bad,
            "params": fer.load_fer_params(weights)}


def run_faces(setup, *extra):
    out = setup["root"] / "out.json"
    rc = cli.main(["faces", *extra, "--weights", str(setup["weights"]), "--json", str(out)])
    return rc, json.loads(out.read_text())


def direct_probs(params, crops):
    return np.asarray(fer.extract_features(params, crops, output="probs"))


def test_faces_video_image_and_bad_file(setup, capsys):
    rc, report = run_faces(setup, "--fps", str(FPS), str(setup["video"]), str(setup["bad"]),
                           str(setup["image"]))
    captured = capsys.readouterr()
    assert rc == 1  # one unreadable file, reported, and the others still processed
    assert str(setup["bad"]) in captured.err
    assert [e["path"] for e in report["errors"]] == [str(setup["bad"])]
    assert report["classes"] == list(fer.CLASS_NAMES)
    video, image = report["files"]

    frames, _ = read_video(setup["video"], FPS)
    assert [f["time"] for f in video["frames"]] == pytest.approx(np.arange(5) / FPS)
    assert [f["face"] for f in video["frames"]] == [True, True, True, False, False]
    assert video["frames"][3]["probs"] is None
    cropper = FaceCropper()
    crops = cropper.crop_frames(frames, fer_crop)[0][:3]  # the same tracked detection
    got = np.array([f["probs"] for f in video["frames"][:3]])
    np.testing.assert_allclose(got, direct_probs(setup["params"], crops), atol=2e-6)
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)
    assert captured.out.count("(no face)") == 2

    gray = cv2.cvtColor(face_image(), cv2.COLOR_RGB2GRAY)
    (frame,) = image["frames"]
    want = direct_probs(setup["params"], fer_crop(gray, cropper.detect(gray))[None])[0]
    np.testing.assert_allclose(frame["probs"], want, atol=2e-6)


def test_faces_pipeline_crop(setup):
    rc, report = run_faces(setup, "--crop", "pipeline", "--fps", "2.5", str(setup["video"]))
    assert rc == 0 and not report["errors"]
    frames, _ = read_video(setup["video"], 2.5)
    crops, found = FaceCropper().crop_frames(frames)
    result = report["files"][0]["frames"]
    assert [f["face"] for f in result] == found.tolist()
    np.testing.assert_allclose([f["probs"] for f in result if f["face"]],
                               direct_probs(setup["params"], crops[found]), atol=2e-6)


def test_faces_without_weights(tmp_path, capsys):
    assert cli.main(["faces", "x.avi", "--weights", str(tmp_path / "none")]) == 2
    assert "python3 -m avfbp_jax.commands.fer_convert" in capsys.readouterr().err
