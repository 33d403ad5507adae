"""data/landmarks.py and data/crop.py on real faces (shared data) and synthetic geometry."""

from __future__ import annotations

import numpy as np
import pytest

from talkinghead.data.crop import (box_motion, crop_matrix, crop_square, crop_to_image, landmarks_to_crop,
                                   smooth_boxes, square_box_from_landmarks)
from talkinghead.errors import NoFaceError, TalkingHeadError


@pytest.fixture(scope="module")
def detector():
    from talkinghead.data.landmarks import get_detector

    return get_detector("dlib")


@pytest.fixture(scope="module")
def vox_frames(rendered_driver):
    """A talking face cropped as VoxCeleb's are (the bundled model's astronaut, 256 px, 48 frames)."""
    from talkinghead.data.video import read_frames

    return read_frames(rendered_driver, max_frames=40)


def _small_portrait(name: str) -> np.ndarray:
    """The astronaut's head and shoulders at 256 px (``small``, or ``mirrored``) or 200 px (``cropped``)."""
    import cv2
    from skimage import data

    image = data.astronaut()
    if name == "cropped":
        return cv2.resize(image[20:280, 100:360], (200, 200), interpolation=cv2.INTER_AREA)
    small = cv2.resize(image[:300, 80:380], (256, 256), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(small[:, ::-1]) if name == "mirrored" else small


def _inside(points: np.ndarray, box: np.ndarray, margin: float = 0.15) -> bool:
    x0, y0, x1, y1 = box
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    return bool(((points[:, 0] >= x0 - mx) & (points[:, 0] <= x1 + mx)
                 & (points[:, 1] >= y0 - my) & (points[:, 1] <= y1 + my)).all())


def _check_face_shape(points: np.ndarray) -> None:
    """Anatomy, not just 'some points': eyes above the nose tip, nose above the mouth, mouth
    above the chin, left/right eyes on their sides."""
    right_eye, left_eye = points[36:42].mean(0), points[42:48].mean(0)
    nose, mouth, chin = points[30], points[48:68].mean(0), points[8]
    assert right_eye[0] < left_eye[0]
    assert max(right_eye[1], left_eye[1]) < nose[1] < mouth[1] < chin[1]


@pytest.mark.parametrize("name", ["small", "mirrored", "cropped"])
def test_detect_largest_face_on_small_real_faces(detector, name):
    from talkinghead.data.landmarks import detect_largest_face

    image = _small_portrait(name)
    assert max(image.shape[:2]) <= 256  # small faces: the detector must upsample for these
    points, box, n_faces = detect_largest_face(image, detector)
    assert points.shape == (68, 2) and points.dtype == np.float32
    assert n_faces == 1
    assert (box[2] - box[0]) > 0.25 * image.shape[1]  # a face box, not a speck
    assert _inside(points, box)
    _check_face_shape(points)


def test_no_face_raises(detector):
    from talkinghead.data.landmarks import detect_largest_face

    blank = np.full((200, 300, 3), 90, np.uint8)
    with pytest.raises(NoFaceError, match="no face found"):
        detect_largest_face(blank, detector)
    assert detector.detect_faces(blank).shape == (0, 4)


def test_unknown_detector_is_a_user_error():
    from talkinghead.data.landmarks import get_detector

    with pytest.raises(TalkingHeadError, match="unknown detector"):
        get_detector("nope")


def test_tracking_matches_detection_and_survives_a_lost_face(detector, vox_frames):
    from talkinghead.data.landmarks import detect_every_frame, landmark_extent, track_landmarks

    frames = list(vox_frames[:30])
    blank = np.full_like(frames[0], 30)
    frames[12:16] = [blank] * 4  # the face disappears for 4 frames
    tracked, valid, stats = track_landmarks(frames, detector, redetect_every=8)
    assert tracked.shape == (30, 68, 2) and valid.shape == (30,)
    assert not valid[12:16].any() and np.isnan(tracked[12:16]).all()
    assert valid[:12].all() and valid[17:].all()  # re-acquired right after (at most 1 frame of back-off)
    # far fewer detections than frames: that is the point of tracking
    assert stats["detections"] <= 8, stats
    assert stats["verifications"] >= 2, stats
    reference, ref_valid = detect_every_frame(frames, detector)
    both = valid & ref_valid
    extent = np.array([landmark_extent(p)[1] for p in reference[both]])
    error = np.linalg.norm(tracked[both] - reference[both], axis=2).mean(axis=1) / extent
    assert np.median(error) < 0.05, error  # same face, same points (a few % of the face size)


def test_square_box_frames_the_head_like_voxceleb(detector, vox_frames):
    from talkinghead.data.landmarks import detect_largest_face

    points, _box, _n = detect_largest_face(vox_frames[0], detector)
    cx, cy, side = square_box_from_landmarks(points)
    # This clip is framed as VoxCeleb2 crops are (our own crop, rendered): the box is about the frame.
    h, w = vox_frames[0].shape[:2]
    assert side == pytest.approx(w, rel=0.15)
    assert abs(cx - w / 2) < 0.1 * w and abs(cy - h / 2) < 0.1 * h
    # brows inside, with forehead room above them; chin inside
    assert cy - side / 2 < points[17:27, 1].min() - 0.1 * side
    assert cy + side / 2 > points[8, 1]


def test_crop_landmark_round_trip_and_pixels():
    rng = np.random.default_rng(0)
    points = rng.uniform(100, 500, size=(68, 2)).astype(np.float32)
    for box in (np.array([300.0, 260.0, 410.0]), np.array([20.0, 600.0, 900.0])):  # inside / leaving the frame
        size = 128
        crop_pts = landmarks_to_crop(points, box, size)
        np.testing.assert_allclose(crop_to_image(crop_pts, box, size), points, atol=1e-3)
        # the square's corners go to the crop's pixel edges
        corners = np.array([[box[0] - box[2] / 2 - 0.5, box[1] - box[2] / 2 - 0.5]])
        np.testing.assert_allclose(landmarks_to_crop(corners, box, size), [[-0.5, -0.5]], atol=1e-4)
        assert crop_matrix(box, size).shape == (2, 3)
    # a bright dot lands where landmarks_to_crop says, with and without the area pre-shrink
    image = np.zeros((720, 1280, 3), np.uint8)
    image[395:406, 695:706] = 255  # centre (700, 400)
    for box in (np.array([640.0, 360.0, 300.0]), np.array([640.0, 360.0, 900.0])):
        crop = crop_square(image, box, 64).astype(np.float64)[..., 0]
        ys, xs = np.mgrid[0:64, 0:64]
        centroid = np.array([(xs * crop).sum(), (ys * crop).sum()]) / crop.sum()
        expected = landmarks_to_crop(np.array([[700.0, 400.0]]), box, 64)[0]
        np.testing.assert_allclose(centroid, expected, atol=0.3)
    # NaN (invalid frame) stays NaN
    assert np.isnan(landmarks_to_crop(np.full((68, 2), np.nan), box, 64)).all()


def test_crop_pads_outside_the_frame():
    image = np.full((100, 100, 3), 200, np.uint8)
    crop = crop_square(image, np.array([0.0, 0.0, 100.0]), 50)  # 3/4 of the square is outside
    assert crop.shape == (50, 50, 3)
    assert (crop == 200).all()  # edge pixels replicated, not black
    import cv2

    black = crop_square(image, np.array([0.0, 0.0, 100.0]), 50, border=cv2.BORDER_CONSTANT)
    assert black[:20, :20].max() == 0 and black[-5:, -5:].min() == 200


def test_smooth_boxes_static_and_moving():
    rng = np.random.default_rng(1)
    t = np.arange(100)
    # a tight crop: detector noise of 1-2 px around a fixed box -> one fixed box
    static = np.stack([112 + rng.normal(0, 1.5, 100), 115 + rng.normal(0, 1.5, 100),
                       200 + rng.normal(0, 2, 100)], axis=1)
    valid = np.ones(100, bool)
    valid[40:50] = False
    static[40:50] = np.nan
    out = smooth_boxes(static, valid)
    assert np.isfinite(out).all() and (out == out[0]).all()
    assert box_motion(static, valid) < 0.06
    # a head moving across a wide shot: followed, with the jitter reduced
    truth = np.stack([300 + 3 * t, 200 + 20 * np.sin(t / 15), np.full(100, 250.0)], axis=1)
    noisy = truth + rng.normal(0, 3, truth.shape)
    noisy[60:70] = np.nan
    valid = np.ones(100, bool)
    valid[60:70] = False
    out = smooth_boxes(noisy, valid)
    assert np.isfinite(out).all()
    error_in = np.abs(noisy[valid] - truth[valid]).mean()
    error_out = np.abs(out - truth).mean()
    assert error_out < 0.6 * error_in
    assert np.abs(out[60:70, 0] - truth[60:70, 0]).max() < 10  # the gap is interpolated


def test_fit_boxes_in_frame_shifts_within_limits():
    from talkinghead.data.crop import fit_boxes_in_frame

    boxes = np.array([[240.0, 330.0, 440.0],   # reaches 70 px below a 480 frame: moved up
                      [240.0, 240.0, 200.0],   # inside: unchanged
                      [240.0, 240.0, 600.0],   # bigger than the frame: centred
                      [240.0, 470.0, 200.0]])  # would need 130 px > 25 % of 200: moved 50 px only
    out = fit_boxes_in_frame(boxes, 480, 480)
    np.testing.assert_allclose(out[0], [240, 260, 440])
    np.testing.assert_allclose(out[1], boxes[1])
    np.testing.assert_allclose(out[2], [240, 240, 600])
    np.testing.assert_allclose(out[3], [240, 420, 200])
