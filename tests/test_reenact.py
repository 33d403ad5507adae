import numpy as np
import pytest

from talkinghead.data.synthetic import move_landmarks, template_landmarks
from talkinghead.infer.reenact import adapt_landmarks, apply_transform, pick_reference_frame, similarity_transform


def test_similarity_transform_recovers_known_transform():
    src = template_landmarks(128)
    dst = move_landmarks(src, dx=7, dy=-3, angle_deg=12, scale=1.3)
    m = similarity_transform(src, dst)
    assert np.allclose(apply_transform(m, src), dst, atol=1e-3)


def test_relative_mode_keeps_avatar_shape_and_transfers_motion():
    avatar = template_landmarks(128)
    # a driver with a different face shape (wider jaw), bigger and shifted in its own frame
    driver_neutral = template_landmarks(256).copy()
    driver_neutral[0:17, 0] = (driver_neutral[0:17, 0] - 128) * 1.2 + 128
    open_mouth = driver_neutral.copy()
    open_mouth[57, 1] += 10  # lower lip moves down 10 px in the driver's 256-px frame
    out = adapt_landmarks(np.stack([driver_neutral, open_mouth]), avatar, mode="relative")
    # neutral frame maps exactly onto the avatar's own face (its shape is kept)
    assert np.allclose(out[0], avatar, atol=1e-3)
    # the motion arrives, scaled to the avatar (its face is about half the driver's size)
    assert 3.5 < out[1, 57, 1] - avatar[57, 1] < 6.5
    others = np.delete(np.arange(68), 57)
    assert np.allclose(out[1, others], avatar[others], atol=1e-3)


def test_absolute_mode_aligns_but_keeps_driver_shape():
    avatar = template_landmarks(128)
    driver = move_landmarks(template_landmarks(128), dx=20, angle_deg=10, scale=0.8)
    out = adapt_landmarks(driver[None], avatar, mode="absolute")
    assert np.allclose(out[0], avatar, atol=1e-2)  # same shape -> perfect alignment


def test_head_motion_is_transferred():
    avatar = template_landmarks(128)
    driver = template_landmarks(200)
    nod = move_landmarks(driver, dy=10)
    out = adapt_landmarks(np.stack([driver, nod]), avatar)
    shift = (out[1] - out[0]).mean(0)
    assert shift[1] == pytest.approx(10 * 128 / 200, rel=0.05) and abs(shift[0]) < 1e-3


def test_best_reference_frame_and_invalid_frames():
    avatar = template_landmarks(128)
    far = move_landmarks(template_landmarks(128), angle_deg=25)
    track = np.stack([far, template_landmarks(128), far])
    assert pick_reference_frame(track, avatar) == 1
    track[0] = np.nan
    out = adapt_landmarks(track, avatar, reference="first")
    assert np.isnan(out[0]).all() and np.isfinite(out[1:]).all()
    with pytest.raises(ValueError, match="68, 2"):
        adapt_landmarks(np.zeros((3, 5, 2)), avatar)


def _opened(points, gap):
    from talkinghead.infer.expression import open_mouth

    width = np.linalg.norm(points[54] - points[48])
    return open_mouth(points[None], 1.0, gap / width)[0]


def test_default_relative_mode_closes_the_lips_with_a_mid_speech_first_frame():
    from talkinghead.infer.reenact import mouth_opening

    avatar = template_landmarks(128)
    driver = template_landmarks(256)
    gaps = np.array([12.0, 0.0, 4.0, 20.0, 0.0, 8.0])  # the first frame is mid-speech
    track = np.stack([_opened(driver, g) for g in gaps])
    out = adapt_landmarks(track, avatar)
    opening = mouth_opening(out)
    assert opening[1] == pytest.approx(mouth_opening(avatar[None])[0], abs=1e-3)  # closed like the driver
    assert np.corrcoef(opening, gaps)[0, 1] > 0.99
    # the old offset from the first frame: lips cross (negative gap) when the driver closes
    old = adapt_landmarks(track, avatar, reference="first", neutral_mouth=False)
    assert (old[1, 66, 1] - old[1, 62, 1]) < -1


def test_an_avatar_with_an_open_mouth_closes_it_when_the_driver_does():
    from talkinghead.infer.reenact import close_mouth, mouth_opening

    avatar = _opened(template_landmarks(128), 10.0)
    driver = template_landmarks(256)
    track = np.stack([driver, _opened(driver, 16.0)])
    out = adapt_landmarks(track, avatar)
    assert mouth_opening(out[:1])[0] < 0.02
    assert mouth_opening(out[1:])[0] > 0.1
    # the rest of the avatar's face (eyes, nose, upper lip) is its own
    keep = np.r_[17:48, 48:55, 60:65]
    assert np.allclose(out[0, keep], close_mouth(avatar)[keep], atol=1e-3)


def test_neutral_reference_is_the_nearest_head_pose_whatever_the_mouth_does():
    from talkinghead.infer.reenact import pick_neutral_frame

    avatar = template_landmarks(128)
    base = template_landmarks(256)
    track = np.stack([move_landmarks(base, angle_deg=20), _opened(base, 25), move_landmarks(base, angle_deg=-15),
                      _opened(move_landmarks(base, angle_deg=8), 2)])
    assert pick_neutral_frame(track, avatar) == 1


def test_relative_mode_starts_from_the_shot_nearest_the_drivers_pose():
    from talkinghead.infer.reenact import pick_neutral_pair

    front = template_landmarks(128)
    turned = move_landmarks(template_landmarks(128), angle_deg=25)
    shots = np.stack([front, turned])
    driver = move_landmarks(template_landmarks(256), angle_deg=25)
    track = np.stack([driver, _opened(driver, 10)])
    assert pick_neutral_pair(track, shots) == (0, 1)
    out = adapt_landmarks(track, shots)
    assert np.allclose(out[0], turned, atol=1e-2)  # the turned shot's face, not the front one turned further
    # absolute mode and the other references keep aligning onto the first shot
    assert np.allclose(adapt_landmarks(track, shots, reference="first")[0], front, atol=1e-2)
