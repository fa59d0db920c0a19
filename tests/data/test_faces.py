"""Face detection on a real photograph shipped with scikit-image, and on faceless images."""

import cv2
import numpy as np
import pytest

from avfbp_jax.data.faces import FaceCropper, fer_crop, make_detector

skimage_data = pytest.importorskip("skimage.data")

# The face in skimage.data.astronaut() (512 x 512), read off the image: pupils and mouth centre
# (x, y), and the face from hairline to chin as rows y0:y1, columns x0:x1 (pixels).
LEFT_EYE, RIGHT_EYE, MOUTH = (197, 106), (246, 106), (222, 146)
FACE_ROWS, FACE_COLS = slice(60, 185), slice(160, 285)


@pytest.fixture(scope="module")
def astronaut():
    return cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2GRAY)


def _inside(point, box):
    x, y, w, h = box
    return x <= point[0] < x + w and y <= point[1] < y + h


def test_finds_the_astronaut_face(astronaut):
    cropper = FaceCropper()
    box = cropper.detect(astronaut)
    assert box is not None
    assert all(_inside(p, box) for p in (LEFT_EYE, RIGHT_EYE, MOUTH))
    assert 70 <= box[2] <= 140  # face width ~100 px; not the whole torso
    # Detecting on the downscaled frame agrees with full resolution.
    full = make_detector("haar", detect_size=512).detect(astronaut)
    overlap_w = min(box[0] + box[2], full[0] + full[2]) - max(box[0], full[0])
    overlap_h = min(box[1] + box[3], full[1] + full[3]) - max(box[1], full[1])
    union = box[2] * box[3] + full[2] * full[3] - overlap_w * overlap_h
    assert overlap_w * overlap_h / union > 0.7


def test_crop_contains_the_face_and_blank_frames_are_masked(astronaut):
    cropper = FaceCropper(crop_size=64)
    rng = np.random.default_rng(0)
    frames = np.stack(
        [astronaut, np.full_like(astronaut, 128), rng.integers(0, 256, astronaut.shape, np.uint8)]
    )
    crops, found = cropper.crop_frames(frames)
    assert crops.shape == (3, 64, 64) and crops.dtype == np.uint8
    np.testing.assert_array_equal(found, [True, False, False])
    assert not crops[1:].any()  # no face: zero crop
    np.testing.assert_array_equal(crops[0], cropper.crop(astronaut, cropper.detect(astronaut)))
    # The crop is centred on the face: the cascade finds a face filling most of it again.
    again = make_detector("haar", min_neighbors=3).detect(cv2.resize(crops[0], (128, 128)))
    assert again is not None and again[2] >= 0.6 * 128
    # It looks like the known face region of the photograph, unlike regions beside it.
    def similarity(rows, cols):
        region = cv2.resize(astronaut[rows, cols], (64, 64), interpolation=cv2.INTER_AREA)
        return np.corrcoef(crops[0].ravel().astype(float), region.ravel().astype(float))[0, 1]

    assert similarity(FACE_ROWS, FACE_COLS) > 0.6
    assert similarity(slice(180, 305), FACE_COLS) < 0.3  # the neck ring below
    assert similarity(FACE_ROWS, slice(60, 185)) < 0.3  # the flag to the left


def test_crop_pads_with_zeros_outside_the_frame():
    frame = np.full((100, 100), 200, np.uint8)
    crop = FaceCropper(crop_size=32, margin=0.0).crop(frame, (-20, -20, 40, 40))
    assert crop[:16, :16].max() == 0 and crop[17:, 17:].min() == 200


def test_rejects_non_uint8_frames():
    with pytest.raises(ValueError, match="uint8"):
        FaceCropper().crop_frames(np.zeros((2, 32, 32), np.float32))


def test_search_near_the_previous_box_agrees_with_a_full_search(astronaut):
    cropper = FaceCropper()
    full = np.array(cropper.detect(astronaut))
    np.testing.assert_allclose(cropper.detect(astronaut, near=tuple(full)), full, atol=8)
    # A stale box far from the face: nothing there, so the whole frame is searched again.
    np.testing.assert_array_equal(cropper.detect(astronaut, near=(400, 400, 60, 60)), full)
    assert cropper.detect(np.full_like(astronaut, 90), near=tuple(full)) is None


def test_fer_crop_matches_fers_steps():
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (240, 320), dtype=np.uint8)
    # A square box well inside the frame: crop widened by 10 px on each side, resized.
    np.testing.assert_array_equal(fer_crop(gray, (100, 50, 80, 80)),
                                  cv2.resize(gray[40:140, 90:190], (64, 64)))
    # A tall box is widened symmetrically to a square before the 10 px offsets.
    np.testing.assert_array_equal(fer_crop(gray, (100, 50, 60, 80)),
                                  cv2.resize(gray[40:140, 80:180], (64, 64)))
    # At the corner, the part outside the frame is the mean of the frame's bottom two rows.
    gray = np.full((100, 100), 200, np.uint8)
    gray[-2:] = 30
    crop = fer_crop(gray, (0, 0, 44, 44))  # 64x64 region from (-10, -10): no resampling
    assert crop.shape == (64, 64)
    assert (crop[:10] == 30).all() and (crop[:, :10] == 30).all() and (crop[10:, 10:] == 200).all()


def test_make_detector_names_the_choices():
    with pytest.raises(ValueError, match="face detector must be one of haar, mtcnn, got 'dlib'"):
        make_detector("dlib")
