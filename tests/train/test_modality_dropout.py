"""Modality dropout removes whole streams through the masks, at the set rate, never both."""

import jax
import numpy as np
import pytest

from avfbp_jax.train.modality_dropout import drop_modalities, remove_modality


def _batch(rows=4000, frames=6):
    rng = np.random.default_rng(0)
    mask = rng.random((rows, frames)) < 0.8
    mask[:100] = False  # clips without any face
    audio_len = rng.integers(1000, 16000, rows).astype(np.int32)
    audio_len[100:200] = 0  # clips without audio
    return {"audio": np.zeros((rows, 8), np.int16), "audio_len": audio_len,
            "frames": np.zeros((rows, frames, 2, 2), np.uint8),
            "frame_len": np.full(rows, frames, np.int32), "frame_mask": mask}


def test_rate_and_sides_and_never_both():
    batch = _batch()
    out = jax.jit(drop_modalities, static_argnums=2)(batch, jax.random.key(1), 0.3)
    lost_audio = (np.asarray(out["audio_len"]) == 0) & (batch["audio_len"] > 0)
    lost_faces = ~np.asarray(out["frame_mask"]).any(1) & batch["frame_mask"].any(1)
    kept_rows = slice(200, None)  # rows that had both modalities
    rate = (lost_audio | lost_faces)[kept_rows].mean()
    assert abs(rate - 0.3) < 0.03
    assert abs(lost_audio[kept_rows].mean() - 0.15) < 0.02
    assert not np.any(lost_audio & lost_faces)
    # No clip loses its last modality.
    assert not np.any(lost_audio[:100]) and not np.any(lost_faces[100:200])
    # Masks only shrink; unchanged rows are unchanged; arrays are untouched.
    assert np.all(np.asarray(out["frame_mask"]) <= batch["frame_mask"])
    same = ~(lost_audio | lost_faces)
    np.testing.assert_array_equal(np.asarray(out["audio_len"])[same], batch["audio_len"][same])
    for key in ("audio", "frames", "frame_len"):
        np.testing.assert_array_equal(out[key], batch[key])


def test_rate_zero_changes_nothing_and_keys_differ():
    batch = _batch(rows=500)
    out = drop_modalities(batch, jax.random.key(0), 0.0)
    np.testing.assert_array_equal(out["audio_len"], batch["audio_len"])
    np.testing.assert_array_equal(out["frame_mask"], batch["frame_mask"])
    a = drop_modalities(batch, jax.random.key(0), 0.5)["audio_len"]
    b = drop_modalities(batch, jax.random.key(1), 0.5)["audio_len"]
    assert np.any(np.asarray(a) != np.asarray(b))


def test_remove_modality():
    batch = _batch(rows=50)
    no_audio = remove_modality(batch, "audio")
    assert np.all(np.asarray(no_audio["audio_len"]) == 0)
    np.testing.assert_array_equal(no_audio["frame_mask"], batch["frame_mask"])
    no_faces = remove_modality(batch, "faces")
    assert not np.asarray(no_faces["frame_mask"]).any()
    np.testing.assert_array_equal(no_faces["audio_len"], batch["audio_len"])
    assert not isinstance(no_faces["frame_mask"], jax.Array)  # stays on the host
    with pytest.raises(ValueError, match="modality must be one of audio, faces, got 'video'"):
        remove_modality(batch, "video")
