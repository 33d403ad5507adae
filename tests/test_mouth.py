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


def test_drawn_interior_has_a_dark_cavity_and_light_upper_teeth_at_output_resolution():
    from talkinghead.infer.mouth_interior import MouthPalette, draw_interior, interior_level

    size = 512
    marks = face(14.0).numpy()[0].astype(np.float64) * size / SIZE
    image = np.full((size, size, 3), 180, np.uint8)
    palette = MouthPalette(np.array([200.0, 110, 100]), np.array([235.0, 228, 215]),
                           np.array([60.0, 25, 22]), np.array([180.0, 80, 80]))
    out = draw_interior(image, marks, 1.0, palette)
    inside = inner_lip_mask(torch.from_numpy(marks[None]).float(), size, feather=0)[0, 0].numpy() > 0
    near = inner_lip_mask(torch.from_numpy(marks[None]).float(), size, feather=6)[0, 0].numpy() > 0
    assert np.array_equal(out[~near], image[~near])  # nothing drawn outside the lips
    light = out[inside].mean(1)
    assert light.min() < 90 and light.max() > 190  # a cavity and teeth, not one smear
    # the teeth hang from the upper lip: the lightest rows are the top ones
    rows = np.flatnonzero(inside.any(1))
    top, bottom = rows[: len(rows) // 4], rows[len(rows) // 2:]
    mean_row = lambda r: out[r][inside[r]].mean()
    assert np.mean([mean_row(r) for r in top]) > np.mean([mean_row(r) for r in bottom])
    assert draw_interior(image, marks, 0.0, palette) is image
    assert np.allclose(interior_level(np.array([0.1, 0.2, 0.4]), np.array([0.05, 0.1]), 0.15), [0, 2 / 3, 1])


@pytest.mark.parametrize("interior", ["learned", "drawn"])
def test_avatar_puts_an_interior_only_where_the_target_opens_wider_than_its_shot(astronaut_avatar, interior):
    from talkinghead.infer.expression import open_mouth

    base = astronaut_avatar.reference_landmarks[None].astype(np.float64)
    width = np.linalg.norm(base[0, 54] - base[0, 48])
    track = np.concatenate([open_mouth(base, 0.0), open_mouth(base, 1.0, 0.5)]).astype(np.float32)  # shut, wide
    levels = astronaut_avatar.mouth_levels(track)
    assert levels[0] == 0 and levels[1] == 1
    mouth = astronaut_avatar.config.mouth
    size = 256
    try:
        mouth.interior = interior
        on = astronaut_avatar.animate(track, progress=False, size=size, consecutive=False)
        mouth.draw_interior = False
        off = astronaut_avatar.animate(track, progress=False, size=size, consecutive=False)
    finally:
        mouth.draw_interior, mouth.interior = True, "learned"
    assert on.shape == (2, size, size, 3)
    assert np.array_equal(on[0], off[0])  # a closed mouth is left as rendered
    scaled = torch.from_numpy((track[1:] + 0.5) * size / astronaut_avatar.size - 0.5)
    inside = inner_lip_mask(scaled, size, feather=0)[0, 0].numpy() > 0
    assert inside.sum() > 0.002 * size * size and width > 0
    assert np.abs(on[1][inside].astype(int) - off[1][inside]).mean() > 20  # the interior replaced the smear
    light = on[1][inside].mean(1)
    assert light.min() < 80  # with a dark cavity
    # and teeth: the upper fifth of the opening (under the upper lip) is lighter than the middle
    assert band_mean(on[1], inside, 0.0, 0.2) > band_mean(on[1], inside, 0.4, 0.6) + 20


def band_mean(image: np.ndarray, inside: np.ndarray, top: float, bottom: float) -> float:
    """Mean of ``image`` inside the mask over the rows from ``top`` to ``bottom`` (fractions of
    the mask's height)."""
    rows = np.flatnonzero(inside.any(1))
    lo, hi = rows[0] + int(top * len(rows)), rows[0] + int(bottom * len(rows))
    return float(image[lo:hi][inside[lo:hi]].mean())
