"""`avfbp predict`: real media files in, per-class probabilities out, with modality fallbacks."""

import json
import os

import numpy as np
import pytest
from data.data_helpers import face_frames, tone, write_video, write_wav
from test_export import LABELS, init_params, tiny_config

from avfbp_jax import export, predict
from avfbp_jax.commands import cli
from avfbp_jax.data.faces import FaceCropper
from avfbp_jax.data.prepare import load_clip


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    config = tiny_config()
    out = str(tmp_path_factory.mktemp("predict") / "bundle")
    export.export_bundle(init_params(config.model), config, out, labels=LABELS)
    return out


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A folder of recordings: complete ones and ones missing a face, audio, or everything."""
    root = tmp_path_factory.mktemp("media")
    blank = np.full((20, 160, 160), 128, np.uint8)
    write_video(str(root / "a" / "pair.avi"), face_frames(2.0))
    write_wav(str(root / "a" / "pair.wav"), 2.0)
    write_video(str(root / "a" / "muxed.avi"), face_frames(1.5), audio=tone(1.5, freq=330.0))
    write_video(str(root / "b" / "noface.avi"), blank, audio=tone(2.0))
    write_video(str(root / "b" / "mute.avi"), face_frames(2.0))  # no audio track, no wav
    write_wav(str(root / "b" / "voice.wav"), 2.5, freq=180.0)  # no video
    (root / "b" / "broken.avi").write_bytes(b"RIFF\x00\x00not a video")
    (root / "b" / "notes.txt").write_text("not media")
    return root


def exact_probs(bundle: str, video: str, audio: str | None) -> np.ndarray:
    """The bundle on one recording from load_clip, padded only to the minimum audio length."""
    infer, meta = export.load_exported(bundle)
    clip = load_clip(video, audio, cropper=FaceCropper(64))
    samples = max(len(clip["audio"]), meta["min_audio_samples"])
    batch = {"audio": np.zeros((1, samples), np.float32),
             "audio_len": np.array([len(clip["audio"])]), "frames": clip["frames"][None],
             "frame_len": np.array([len(clip["frame_mask"])]),
             "frame_mask": clip["frame_mask"][None]}
    batch["audio"][0, :len(clip["audio"])] = clip["audio"]
    return np.asarray(infer(batch)["probs"][0])


def test_find_recordings_pairs_stems(media):
    found = predict.find_recordings([str(media), str(media / "a" / "pair.avi")])
    names = {os.path.relpath(r.name, media): r for r in found}
    assert sorted(names) == ["a/muxed.avi", "a/pair.avi", "b/broken.avi", "b/mute.avi",
                             "b/noface.avi", "b/voice.wav"]
    assert names["a/pair.avi"].audio == str(media / "a" / "pair.wav")
    assert names["b/voice.wav"].video is None and names["a/muxed.avi"].audio is None
    # A video named alone still gets its same-stem sound track.
    assert predict.find_recordings([str(media / "a" / "pair.avi")]) == [
        predict.Recording(str(media / "a" / "pair.avi"), str(media / "a" / "pair.wav"))]
    with pytest.raises(ValueError, match="notes.txt: not a media file"):
        predict.find_recordings([str(media / "b" / "notes.txt")])


def test_predict_folder(bundle, media, tmp_path, capsys):
    out = str(tmp_path / "predictions.json")
    assert cli.main(["predict", bundle, str(media), "--json", out, "--batch-size", "3"]) == 0
    captured = capsys.readouterr()
    with open(out) as f:
        report = json.load(f)
    results = {os.path.relpath(r["file"], media): r for r in report["results"]}
    assert sorted(results) == ["a/muxed.avi", "a/pair.avi", "b/broken.avi", "b/mute.avi",
                               "b/noface.avi", "b/voice.wav"]
    assert report["files_per_second"] > 0
    assert "broken.avi" in results["b/broken.avi"]["skipped"]
    for name, notes in [("a/pair.avi", []), ("a/muxed.avi", []),
                        ("b/noface.avi", ["no face in any of 20 frames"]),
                        ("b/mute.avi", ["no usable audio"]), ("b/voice.wav", ["no video file"])]:
        r = results[name]
        assert [n[:len(want)] for n, want in zip(r["notes"], notes, strict=True)] == notes
        probs = np.array([r["probabilities"][k] for k in LABELS])
        assert np.all(probs > 0) and abs(probs.sum() - 1) < 1e-5
        assert r["prediction"] == LABELS[int(np.argmax(probs))]
        assert f"{r['file']}: {r['prediction']}  (" in captured.out
    assert "broken.avi: skipped" in captured.err
    assert "5 files predicted, 1 skipped" in captured.err and "files/s" in captured.err
    # Same numbers as the bundle on each recording alone at its exact length: bucket and batch
    # padding change nothing, and predict decodes with the training pipeline (load_clip).
    for name, audio in [("a/pair.avi", "a/pair.wav"), ("a/muxed.avi", None)]:
        want = exact_probs(bundle, str(media / name), audio and str(media / audio))
        got = np.array([results[name]["probabilities"][k] for k in LABELS])
        # 1e-5: the padding-invariance bound of tests/models (float32 sums over differently
        # padded axes; sqrt(o) before the classifier scales that noise by ~3 at o = 8).
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_predict_errors(bundle, media, tmp_path, capsys):
    assert cli.main(["predict", bundle, str(tmp_path / "missing.avi")]) == 2
    assert "missing.avi: no such file or folder" in capsys.readouterr().err
    assert cli.main(["predict", str(tmp_path), str(media)]) == 2
    assert "not an export bundle" in capsys.readouterr().err
    assert cli.main(["predict", bundle, str(media / "b" / "broken.avi")]) == 1
    assert "0 files predicted, 1 skipped" in capsys.readouterr().err


def test_predict_with_a_fer_features_bundle(media, tmp_path):
    """A model that reads the FER port's per-frame features gets them computed from the crops,
    exactly as `avfbp prepare --fer-features` stores them."""
    from avfbp_jax.models import fer

    config = tiny_config()
    config.model.video.encoder = "identity"
    config.model.video.feature_dim = fer.FEATURE_DIM
    config.data.frame_input = "fer"
    out = str(tmp_path / "fer_bundle")
    export.export_bundle(init_params(config.model), config, out, labels=LABELS)
    infer, meta = export.load_exported(out)
    assert meta["preprocessing"]["frame_input"] == "features"
    video, audio = str(media / "a" / "pair.avi"), str(media / "a" / "pair.wav")
    (result,) = predict.predict(out, [video], progress=False)
    clip = load_clip(video, audio, cropper=FaceCropper(64))
    features = fer.FrameFeatures(64)(clip["frames"])
    samples = max(len(clip["audio"]), meta["min_audio_samples"])
    batch = {"audio": np.zeros((1, samples), np.float32),
             "audio_len": np.array([len(clip["audio"])]), "frames": features[None],
             "frame_len": np.array([len(features)]), "frame_mask": clip["frame_mask"][None]}
    batch["audio"][0, :len(clip["audio"])] = clip["audio"]
    want = np.asarray(infer(batch)["probs"][0])
    got = np.array([result["probabilities"][k] for k in LABELS])
    assert result["notes"] == []
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
