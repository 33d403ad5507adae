"""The mouth's distrust of a stretched guide (talkinghead.data.mouth)."""

import numpy as np
import pytest
import torch

from talkinghead.config import MouthConfig
from talkinghead.data.mouth import guide_distrust, inner_lip_mask, lip_opening
from talkinghead.data.synthetic import template_landmarks

SIZE = 128


def face(gap: float) -> torch.Tensor:
    """(1, 68, 2) template face whose inner lips are ``gap`` pixels apart."""
    from talkinghead.infer.expression import open_mouth

    points = template_landmarks(SIZE)[None]
    width = np.linalg.norm(points[0, 54] - points[0, 48])
    return torch.from_numpy(open_mouth(points, 0.0, gap / width).astype(np.float32))


def test_lip_opening_and_mask_follow_the_gap():
    assert float(lip_opening(face(0.0))) == pytest.approx(0.0, abs=1e-4)
    assert float(lip_opening(face(12.0))) > float(lip_opening(face(6.0))) > 0.05
    assert float(inner_lip_mask(face(0.0), SIZE).sum()) < 1.0
    open_area = float(inner_lip_mask(face(12.0), SIZE).sum())
    assert open_area > 2 * float(inner_lip_mask(face(6.0), SIZE).sum()) * 0.9 > 0


def test_no_distrust_where_the_target_opens_as_wide_as_the_shot():
    assert float(guide_distrust(face(10.0), face(10.0), SIZE).max()) == 0.0
    assert float(guide_distrust(face(14.0), face(10.0), SIZE).max()) == 0.0  # the shot opens wider


def test_distrust_grows_with_the_excess_opening_inside_the_mouth_only():
    target = face(14.0)
    levels = [guide_distrust(face(g), target, SIZE) for g in (12.0, 8.0, 3.0, 0.0)]
    peaks = [float(d.max()) for d in levels]
    assert 0 < peaks[0] < peaks[1] < peaks[2] <= peaks[3] <= 1.0
    inside = inner_lip_mask(target, SIZE) > 0
    assert float(levels[-1][~inside].abs().max()) == 0.0
    assert float(guide_distrust(face(0.0), target, SIZE, MouthConfig(guide_distrust=False)).max()) == 0.0


def test_a_closed_target_mouth_leaves_the_guide_untouched():
    from talkinghead.models.guide import WarpGuide

    shots = torch.rand(1, 2, 3, SIZE, SIZE) * 2 - 1
    marks = torch.cat([face(0.0), face(12.0)])[None]  # (1, K=2, 68, 2): a closed and an open shot
    target = face(0.0)
    on = WarpGuide(fuse=2)(shots, marks, target)
    off = WarpGuide(fuse=2, mouth=MouthConfig(guide_distrust=False))(shots, marks, target)
    assert torch.equal(on, off)
    assert float(guide_distrust(face(0.0), target, SIZE).max()) == 0.0


def test_an_open_target_lowers_the_guides_trust_between_the_lips():
    from talkinghead.models.guide import WarpGuide

    shots = torch.rand(1, 1, 3, SIZE, SIZE) * 2 - 1
    target = face(14.0)
    on = WarpGuide()(shots, face(0.0)[None], target)
    off = WarpGuide(mouth=MouthConfig(guide_distrust=False))(shots, face(0.0)[None], target)
    inside = inner_lip_mask(target, SIZE, feather=0)[0, 0] > 0
    near = inner_lip_mask(target, SIZE)[0, 0] > 0  # with the feathered edge
    assert float(on[0, 3][inside].mean()) < 0.1 < float(off[0, 3][inside].mean())
    assert torch.equal(on[:, :3], off[:, :3]) and torch.equal(on[0, 3][~near], off[0, 3][~near])
