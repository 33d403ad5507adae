"""Expression controls on landmarks (talkinghead.infer.expression) and `--eyes`/`--lips`."""

from __future__ import annotations

import numpy as np
import pytest

from talkinghead.errors import TalkingHeadError
from talkinghead.infer.expression import (Expression, apply_expression, eye_aspect_ratio, inner_lip_gap,
                                          INNER_LIP_PAIRS, turn_head)


@pytest.fixture(scope="module")
def track():
    from talkinghead.infer.bundled import ASSETS

    return np.load(ASSETS / "demo_track.npy")[::12].astype(np.float32)  # (18, 68, 2), a talking face


def test_defaults_are_the_identity(track):
    assert np.array_equal(apply_expression(track, Expression()), track)
    assert np.array_equal(apply_expression(track[0], Expression()), track[0])
    # a control at its neutral value changes nothing either (each edit is exact at 1 / 0)
    for neutral in (Expression(eyes=1.0, smile=0.0), Expression(yaw=0.0, pitch=0.0, roll=0.0)):
        assert np.allclose(apply_expression(track, neutral), track, atol=1e-4)


def test_eyes_zero_closes_both_eyes_and_scales_between(track):
    assert eye_aspect_ratio(track).min() > 0.1  # the driver's eyes are open (or blinking)
    closed = apply_expression(track, Expression(eyes=0))
    assert np.allclose(eye_aspect_ratio(closed), 0, atol=1e-6)
    half = apply_expression(track, Expression(eyes=0.5))
    assert np.allclose(eye_aspect_ratio(half), eye_aspect_ratio(track) / 2, rtol=0.05)
    unchanged = [i for i in range(68) if i not in (37, 38, 40, 41, 43, 44, 46, 47)]
    assert np.array_equal(closed[:, unchanged], track[:, unchanged])  # only the lids move
    single = apply_expression(track[3], Expression(eyes=0))
    assert single.shape == (68, 2) and np.allclose(single, closed[3], atol=1e-4)


def test_lips_zero_closes_the_inner_lips_with_the_jaw(track):
    open_frame = int(np.argmax(inner_lip_gap(track)))
    assert inner_lip_gap(track)[open_frame] > 0.1
    closed = apply_expression(track, Expression(lips=0))
    for upper, lower in INNER_LIP_PAIRS:
        assert np.allclose(closed[:, upper], closed[:, lower], atol=1e-4)
    assert np.array_equal(closed[:, 48:55], track[:, 48:55])  # the upper lip stays
    assert closed[open_frame, 8, 1] < track[open_frame, 8, 1] - 5  # the chin came up (y points down)
    wider = apply_expression(track, Expression(lips=2))
    assert np.allclose(inner_lip_gap(wider), 2 * inner_lip_gap(track), rtol=0.1, atol=1e-3)


def test_mouth_opens_a_closed_mouth_and_smile_lifts_the_corners(track):
    closed = apply_expression(track, Expression(lips=0))
    opened = apply_expression(closed, Expression(mouth=0.3))
    width = np.linalg.norm(track[:, 54] - track[:, 48], axis=-1)
    gap = np.linalg.norm(opened[:, 66] - opened[:, 62], axis=-1)
    assert np.allclose(gap, 0.3 * width, rtol=0.05)
    smile = apply_expression(track, Expression(smile=0.5))
    assert (smile[:, 48, 1] < track[:, 48, 1]).all() and (smile[:, 54, 1] < track[:, 54, 1]).all()  # up
    assert (np.linalg.norm(smile[:, 54] - smile[:, 48], axis=-1) > width).all()  # out


def test_head_turn(track):
    face = track[0]
    nose = face[27:36].mean(0)
    rolled = turn_head(face[None].astype(np.float64), roll=90)[0]  # beyond the controls' range
    # roll is a rotation of the picture about the nose; 90° clockwise (y down): (x, y) → (−y, x)
    rel = face - nose
    expected = nose + np.stack([-rel[:, 1], rel[:, 0]], -1)
    assert np.allclose(rolled, expected, atol=0.05 * np.linalg.norm(face[45] - face[36]))
    right = apply_expression(face, Expression(yaw=30))
    assert right[30, 0] > face[30, 0] + 10  # the nose tip turns to the picture's right
    jaw_width = np.linalg.norm(face[16] - face[0])
    assert np.linalg.norm(right[16] - right[0]) < jaw_width  # the face is seen narrower
    up = apply_expression(face, Expression(pitch=20))
    assert up[30, 1] < face[30, 1] - 5 and up[8, 1] < face[8, 1]  # nose and chin go up


@pytest.mark.parametrize("bad", [{"eyes": float("nan")}, {"eyes": -0.5}, {"lips": float("inf")},
                                 {"yaw": 90}, {"smile": "1"}])
def test_bad_values_are_refused(bad):
    with pytest.raises(TalkingHeadError):
        Expression(**bad)


def test_eyes_and_lips_options_are_validated(capsys):
    from talkinghead.cli import main

    commands = (["animate", "--avatar", "a.avatar", "--landmarks", "t.npy", "-o", "o.mp4"],
                ["live", "--avatar", "a.avatar", "--video", "v.mp4"])
    for command in commands:
        for option in ("--eyes", "--lips"):
            for value in ("nan", "-1", "abc", "4"):
                with pytest.raises(SystemExit) as exc:
                    main([*command, option, value])
                assert exc.value.code == 2
                err = capsys.readouterr().err
                assert option in err and err.count("\n") == 1


def test_eyes_zero_closes_the_rendered_eyes_in_every_frame(tmp_path):
    """`animate --eyes 0` with the bundled model: dlib's eye aspect ratio on every rendered frame
    is that of a closed eye (real blinks measure 0.15–0.18 on 128-px crops, open eyes 0.33–0.39,
    docs/app.md), and lower than the same frame rendered with the eyes as driven."""
    import cv2
    from skimage import data

    from talkinghead.cli import main
    from talkinghead.data.landmarks import detect_largest_face, get_detector
    from talkinghead.data.video import read_frames

    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    from talkinghead.infer.bundled import ASSETS

    np.save(tmp_path / "track.npy", np.load(ASSETS / "demo_track.npy")[::30])  # 8 frames, eyes open (no blink)
    detector = get_detector("dlib")
    ratios = {}
    for eyes in ("1", "0"):
        out = tmp_path / f"eyes{eyes}.mp4"
        assert main(["animate", "--source", str(photo), "--landmarks", str(tmp_path / "track.npy"), "--steps", "0",
                     "--no-smooth", "--eyes", eyes, "-o", str(out)]) == 0
        frames = read_frames(out)
        assert len(frames) == 8
        ratios[eyes] = np.array([eye_aspect_ratio(detect_largest_face(
            cv2.resize(f, (256, 256), interpolation=cv2.INTER_CUBIC), detector)[0]) for f in frames])
    assert (ratios["0"] < 0.25).all(), ratios
    assert (ratios["0"] < ratios["1"] - 0.04).all(), ratios
