"""Piecewise-affine landmark warping and the warp-guided generator."""

from pathlib import Path

import numpy as np
import pytest
import torch

from talkinghead.config import GuideConfig
from talkinghead.data import augment, warp
from talkinghead.models import guide
from talkinghead.models.guide import WarpGuide
from talkinghead.data.landmarks import MIRROR_68, mirror_landmarks, nose_position
from talkinghead.data.synthetic import turned_to_profile
from talkinghead.errors import TalkingHeadError

ASSETS = Path(__file__).resolve().parents[1] / "src" / "talkinghead" / "assets"


def _unit(x: torch.Tensor) -> torch.Tensor:
    """Episode images in [-1, 1] (episodes may carry uint8 images)."""
    return x.float() / 127.5 - 1 if x.dtype == torch.uint8 else x


def _template(size: int) -> torch.Tensor:
    return torch.from_numpy(warp.TEMPLATE_68[None] * size).float()


def _move(marks: torch.Tensor, angle_deg=6.0, scale=1.05, shift=(4.0, -3.0), jaw=5.0) -> torch.Tensor:
    """A realistic target: the face turned, scaled, shifted, with the jaw and lower lip dropped."""
    c = marks.mean(1, keepdim=True)
    a = np.radians(angle_deg)
    rot = torch.tensor([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]], dtype=torch.float32)
    out = (marks - c) @ rot.T * scale + c + torch.tensor(shift)
    drop = torch.zeros(68)
    drop[[5, 6, 7, 8, 9, 10, 11]] = torch.tensor([0.4, 0.7, 0.9, 1.0, 0.9, 0.7, 0.4])
    drop[[55, 56, 57, 58, 59, 65, 66, 67]] = 1.0
    out[..., 1] += jaw * drop
    return out


def _demo_pairs(size: int, count: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """Real landmark pairs (frame 0 → other frames) of the bundled driving track, in a crop."""
    from talkinghead.data.crop import square_box_from_landmarks

    track = np.load(ASSETS / "demo_track.npy")
    cx, cy, side = square_box_from_landmarks(track[0])
    crop = (track - [cx - side / 2, cy - side / 2]) / side * size
    idx = np.linspace(1, len(track) - 1, count).round().astype(int)
    source = torch.tensor(np.repeat(crop[:1], count, 0), dtype=torch.float32)
    return source, torch.tensor(crop[idx], dtype=torch.float32)


def test_warp_maps_source_landmarks_onto_target_landmarks():
    size = 128
    source = _template(size)
    target = _move(source)
    moved = warp.map_points(source, target, target, size)
    assert (moved - source).abs().max() < 0.5
    # the per-pixel map agrees with the point map at pixel centres
    grid = warp.piecewise_affine_map(source, target, size)
    ij = torch.tensor([[10, 20], [64, 64], [70, 90], [127, 0]])
    points = ij[:, [1, 0]].float()[None]  # (x, y)
    assert torch.allclose(grid[0, ij[:, 0], ij[:, 1]], warp.map_points(source, target, points, size)[0], atol=1e-3)
    # real faces: every target landmark that is not on top of another one (a closed mouth's inner
    # lips coincide, and one place cannot map to two) lands on its source landmark
    source, target = _demo_pairs(size)
    moved = warp.map_points(source, target, target, size)
    gaps = torch.cdist(target, target) + torch.eye(68) * 1e9
    distinct = gaps.amin(-1) > 1.0
    assert distinct.float().mean() > 0.8
    err = (moved - source).abs().amax(-1)[distinct]
    assert err.max() < 0.5, err.max()


def test_warped_image_puts_source_features_at_target_landmarks():
    """A bright dot at each source landmark appears at the target landmark in the warped image."""
    size = 128
    source = _template(size)
    target = _move(source)
    image = torch.full((1, 1, size, size), -1.0)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    for k in (8, 30, 36, 45):  # chin, nose tip, eye corners
        x, y = source[0, k]
        image[0, 0] = torch.maximum(image[0, 0], 2 * torch.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 4.0) - 1)
    warped, _ = warp.warp_image(image, source, target)
    for k in (8, 30, 36, 45):
        x, y = target[0, k]
        x0, y0 = int(x) - 5, int(y) - 5
        window = (warped[0, 0, y0:y0 + 11, x0:x0 + 11] + 1).clamp(min=0) ** 2
        wy, wx = torch.meshgrid(torch.arange(11.0), torch.arange(11.0), indexing="ij")
        found = torch.stack([x0 + (window * wx).sum() / window.sum(), y0 + (window * wy).sum() / window.sum()])
        assert (found - target[0, k]).norm() <= 0.5, k


def test_equal_landmarks_give_the_identity():
    size = 96
    image = torch.rand(2, 3, size, size) * 2 - 1
    marks = torch.stack([_template(size)[0], _move(_template(size))[0]])
    warped, mask = warp.warp_image(image, marks, marks)
    assert torch.allclose(warped, image, atol=1e-4)
    assert mask.shape == (2, 1, size, size) and 0 <= mask.min() and mask.max() <= 1


def test_batched_and_unbatched_warps_agree():
    size = 64
    source, target = _demo_pairs(size, count=3)
    image = torch.rand(3, 3, size, size)
    batched, batched_mask = warp.warp_image(image, source, target)
    for i in range(3):
        single, single_mask = warp.warp_image(image[i:i + 1], source[i:i + 1], target[i:i + 1])
        assert torch.allclose(batched[i:i + 1], single, atol=1e-5)
        assert torch.allclose(batched_mask[i:i + 1], single_mask, atol=1e-6)


def test_pixels_outside_the_head_mask_do_not_move():
    size = 128
    source = _template(size)
    target = _move(source, angle_deg=10, shift=(8.0, 4.0), jaw=8.0)
    image = torch.rand(1, 3, size, size)
    warped, _ = warp.warp_image(image, source, target)
    outside = (warp.motion_mask(source, target, size) == 0)[0, 0]
    # the motion mask covers both heads (jaw line and forehead), grown by a margin
    for marks in (source, target):
        for k in (0, 8, 16, 19, 24):
            x, y = marks[0, k].round().long()
            assert not outside[y, x]
    assert outside.float().mean() > 0.1  # the test means something: there is background
    assert torch.allclose(warped[0][:, outside], image[0][:, outside], atol=1e-4)
    moved = (warped - image).abs().amax(1)[0] > 1e-3
    assert moved[~outside].float().mean() > 0.3  # and the head did move
    # without rigid background the whole frame bends
    bent, _ = warp.warp_image(image, source, target, rigid_background=False)
    assert not torch.allclose(bent[0][:, outside], image[0][:, outside], atol=1e-3)


def test_triangles_hidden_in_the_source_are_filled_from_their_mirror_images():
    size = 128
    source, target = torch.from_numpy(turned_to_profile(_template(size).numpy())), _template(size)
    nose_x = float(source[0, 27:31, 0].mean())
    # source: the squeezed sliver left of the nose is blue, the visible right half green
    image = torch.full((1, 3, size, size), -1.0)
    xs = torch.arange(size).float()
    image[:, 2, :, xs < nose_x - 1] = 1.0
    image[:, 1, :, xs >= nose_x - 1] = 1.0
    cheek = ((target[0, 2] + target[0, 31]) / 2).round().long()  # the target's left cheek
    plain, _ = warp.warp_image(image, source, target, symmetric_fill=False)
    filled, mask = warp.warp_image(image, source, target)
    x, y = cheek.tolist()
    assert plain[0, 2, y, x] > 0.9 and plain[0, 1, y, x] < -0.9  # the sliver smeared over the cheek
    assert filled[0, 1, y, x] > 0.9 and filled[0, 2, y, x] < -0.9  # the visible cheek, mirrored
    assert mask[0, 0, y, x] > 0.9
    # the visible half is untouched by the fill
    right = ((target[0, 14] + target[0, 35]) / 2).round().long()
    assert torch.allclose(filled[0, :, right[1], right[0]], plain[0, :, right[1], right[0]], atol=1e-5)
    # and the mirrored map really is a reflection: the cheek samples the source's right half
    _, fill = warp.symmetric_map(source, target, size)
    assert fill is not None and fill[1][0, y, x] == 1 and fill[0][0, y, x, 0] > nose_x


def test_ordinary_faces_and_opening_mouths_are_never_mirrored():
    size = 128
    source = _template(size)
    wide_open = _move(source, angle_deg=0, scale=1.0, shift=(0.0, 0.0), jaw=20.0)  # mouth magnified 4-6×
    for src, tgt in ((source, _move(source)), (source, wide_open), _demo_pairs(size)):
        assert warp.symmetric_map(src, tgt, size)[1] is None
        image = torch.rand(src.shape[0], 3, size, size)
        assert torch.equal(warp.warp_image(image, src, tgt)[0], warp.warp_image(image, src, tgt, symmetric_fill=False)[0])
    assert (MIRROR_68[MIRROR_68] == np.arange(68)).all()  # an involution
    # the control points' mirror images are the mirrored face's control points, reflected back
    mirrored = torch.from_numpy(mirror_landmarks(source.numpy(), size))
    mirrored_points = warp.control_points(mirrored, size)
    mirrored_points[..., 0] = size - 1 - mirrored_points[..., 0]
    assert torch.allclose(warp.control_points(source, size)[:, warp.MIRROR_CONTROL_POINTS], mirrored_points, atol=1e-4)
    centred = source - source.mean(1, keepdim=True)
    assert (mirrored - mirrored.mean(1, keepdim=True) - centred).abs().max() < 0.06 * size  # the mean face is near-symmetric


def test_real_profile_shot_is_flagged_and_its_warp_filled(shared_faces):
    """vox_aldridge_a starts in profile (the dev split's one-shot source). Its first frames are
    near-profiles: a crop of one is warned about, and dlib's frontal shape model guesses the hidden
    eye, so a refit lands elsewhere (its three-quarter frames refit to ~0.01) and the guide passes
    over it. Warped onto the later three-quarter frames without the symmetric fill the nose smears
    over the far cheek and dlib loses the face. (One test: one real clip, decoded once.)"""
    from talkinghead.data.landmarks import get_detector, landmark_refit_error
    from talkinghead.data.sketch import image_to_tensor, tensor_to_image
    from talkinghead.data.video import iter_frames
    from talkinghead.eval.metrics import detect_landmarks_on_images
    from talkinghead.infer.faces import crops_from_sources

    frames = list(iter_frames(shared_faces / "clips" / "vox_aldridge_a.mp4", max_frames=126))
    detector = get_detector("dlib")
    assert any("in profile" in note for note in crops_from_sources([frames[0]], 128, progress=False).notes)
    faces = crops_from_sources([frames[i] for i in (0, 24, 72, 84)], 128, progress=False)
    error = landmark_refit_error(faces.crops, faces.landmarks, detector)
    assert (error[:2] > 0.2).all() and (error[2:] < 0.03).all(), error
    penalty = WarpGuide().unreliable_shot_penalty(torch.from_numpy(error))
    assert (penalty[:2] > 0.01).all() and (penalty[2:] == 0).all()

    faces = crops_from_sources([frames[i] for i in (0, 68, 76, 84, 116)], 128, progress=False)
    image = image_to_tensor(faces.crops[0])[None].expand(4, -1, -1, -1)
    source = torch.tensor(faces.landmarks[:1], dtype=torch.float32).expand(4, -1, -1)
    target = torch.tensor(faces.landmarks[1:], dtype=torch.float32)
    found = {}
    for fill in (False, True):
        warped = tensor_to_image(warp.warp_image(image, source, target, symmetric_fill=fill)[0])
        found[fill] = np.asarray(detect_landmarks_on_images(warped, faces.landmarks[1:], detector)[1], bool)
    assert found[True].all()
    assert (~found[False]).sum() >= 2


@pytest.mark.parametrize("case", ["collinear", "off_image", "nan", "all_equal"])
def test_degenerate_landmarks_never_give_nan(case):
    size = 64
    source = _template(size)
    if case == "collinear":
        target = torch.stack([torch.linspace(5, 60, 68), torch.full((68,), 30.0)], -1)[None]
    elif case == "off_image":
        target = source + torch.tensor([500.0, -400.0])
    elif case == "nan":
        target = source.clone()
        target[0, 10] = float("nan")
    else:
        target = torch.full((1, 68, 2), 32.0)
    image = torch.rand(1, 3, size, size) * 2 - 1
    warped, mask = warp.warp_image(image, source, target)
    assert torch.isfinite(warped).all() and torch.isfinite(mask).all()
    assert warped.min() >= image.min() - 1e-5 and warped.max() <= image.max() + 1e-5
    if case == "nan":  # documented fallback: no usable landmarks, no warp
        assert torch.allclose(warped, image, atol=1e-4)


def test_nearest_shot_ignores_position_and_scale_and_can_exclude():
    base = _template(64)[0]
    opened = _move(base[None], angle_deg=0, scale=1.0, shift=(0.0, 0.0), jaw=6.0)[0]
    shots = torch.stack([base, opened])[None].repeat(2, 1, 1, 1)  # (2, K=2, 68, 2)
    target = torch.stack([opened * 1.3 + 7, base - 3])  # scaled/shifted copies
    assert guide.nearest_shot(shots, target).tolist() == [1, 0]
    assert guide.nearest_shot(shots, target, exclude=torch.tensor([1, 0])).tolist() == [0, 1]


def test_fused_guide_weights_shots_by_landmark_distance():
    size = 64
    base = _template(size)[0]
    opened = _move(base[None], angle_deg=0, scale=1.0, shift=(0.0, 0.0), jaw=6.0)[0]
    images = torch.rand(3, 3, size, size) * 2 - 1
    marks = torch.stack([base, opened, base.clone()])  # shots 0 and 2 share the target's landmarks
    shots, shot_marks = images[None], marks[None]

    def single(i):
        return torch.cat(warp.warp_image(images[i:i + 1], marks[i:i + 1], base[None]), dim=1)

    one = WarpGuide()(shots, shot_marks, base[None], fuse=1)
    assert torch.allclose(one, single(0), atol=1e-5)  # fuse=1: the nearest shot alone
    # Two shots at distance 0 share the weight equally; the far one (open jaw) gets ~none.
    both = WarpGuide()(shots, shot_marks, base[None], fuse=3)
    assert torch.allclose(both, (single(0) + single(2)) / 2, atol=1e-4)
    # Excluding shot 0 leaves shot 2 nearest: fuse=2 then mixes in shot 1 by its distance only.
    excluded = WarpGuide()(shots, shot_marks, base[None], exclude=torch.tensor([0]), fuse=2)
    gap = (guide.normalised_landmarks(opened) - guide.normalised_landmarks(base)).abs().mean()
    w1 = torch.sigmoid(-gap / GuideConfig().fusion_temperature)  # softmax of two = sigmoid of the gap
    assert 0.0 < w1 < 0.5
    assert torch.allclose(excluded, (1 - w1) * single(2) + w1 * single(1), atol=1e-4)
    # K smaller than fuse, and K = 1 with exclusion (ignored): still one valid guide.
    lone = WarpGuide()(shots[:, :1], shot_marks[:, :1], base[None], exclude=torch.tensor([0]), fuse=2)
    assert torch.allclose(lone, single(0), atol=1e-5)


def test_unreliable_shots_are_passed_over_unless_clearly_nearer():
    size = 64
    base = _template(size)[0]
    opened = _move(base[None], angle_deg=0, scale=1.0, shift=(0.0, 0.0), jaw=6.0)[0]
    images = torch.rand(2, 3, size, size) * 2 - 1
    shots, marks = images[None], torch.stack([base, opened])[None]  # shot 0 matches the target
    gap = float((guide.normalised_landmarks(opened) - guide.normalised_landmarks(base)).abs().mean())
    # Refit errors at or below the threshold cost nothing; above it, the excess × the weight.
    errors = torch.tensor([0.0, GuideConfig().unreliable_landmarks, GuideConfig().unreliable_landmarks + 0.2])
    assert torch.allclose(WarpGuide().unreliable_shot_penalty(errors), torch.tensor([0.0, 0.0, 0.2 * GuideConfig().unreliable_shot_weight]))
    plain = WarpGuide()(shots, marks, base[None])
    assert torch.equal(WarpGuide()(shots, marks, base[None], penalty=torch.zeros(1, 2)), plain)
    assert guide.nearest_shot(marks, base[None], penalty=torch.tensor([[gap * 0.5, 0.0]])).item() == 0
    assert guide.nearest_shot(marks, base[None], penalty=torch.tensor([[gap * 1.5, 0.0]])).item() == 1
    moved = WarpGuide()(shots, marks, base[None], penalty=torch.tensor([[gap * 1.5, 0.0]]))
    assert torch.allclose(moved, torch.cat(warp.warp_image(images[1:], marks[0, 1:], base[None]), dim=1), atol=1e-5)



def test_hidden_mouth_penalty_counts_only_a_clips_outliers_and_allows_for_a_turned_head():
    marks = _template(64).repeat(8, 1, 1)  # (8, 68, 2), about facing the camera
    assert (np.abs(nose_position(marks.numpy()) - 0.5) < GuideConfig().hidden_mouth_yaw_free).all()
    spread = torch.full((8,), 0.006)
    assert torch.equal(WarpGuide().hidden_mouth_penalty(spread, marks), torch.zeros(8))
    # One loose mouth among tight ones: the excess over the absolute threshold, times the weight.
    spread[3] = 0.04
    expected = torch.zeros(8)
    expected[3] = GuideConfig().hidden_mouth_weight * (0.04 - GuideConfig().hidden_mouth_spread)
    assert torch.allclose(WarpGuide().hidden_mouth_penalty(spread, marks), expected)
    # A soft video loosens every mouth: the same shot is no outlier among shots twice as loose as its threshold.
    assert torch.equal(WarpGuide().hidden_mouth_penalty(torch.full((8,), 0.025).index_fill(0, torch.tensor([3]), 0.04),
                                                 marks), torch.zeros(8))
    # A turned head (nose a third of the way off the middle) is allowed a looser mouth.
    turned = marks.clone()
    turned[3, 27:36, 0] += 0.3 * (turned[3, 16, 0] - turned[3, 0, 0])
    assert nose_position(turned.numpy())[3] - 0.5 > 0.25
    assert torch.equal(WarpGuide().hidden_mouth_penalty(spread, turned), torch.zeros(8))
    # One shot: nothing to choose between.
    assert torch.equal(WarpGuide().hidden_mouth_penalty(spread[3:4], marks[3:4]), torch.zeros(1))
    # Degenerate landmarks (none, or the jaw's ends on one point) give no yaw: no penalty, never NaN.
    broken = marks.clone()
    broken[1] = float("nan")
    broken[2, 16] = broken[2, 0]
    penalty = WarpGuide().hidden_mouth_penalty(torch.full((8,), 0.04).index_fill(0, torch.arange(3, 8), 0.006), broken)
    assert torch.isfinite(penalty).all() and penalty[1] == 0 and penalty[2] == 0, penalty


def test_mouth_fit_spread_flags_a_hand_over_the_mouth(shared_faces):
    """pyfeat_wlanger: at frames 30 and 38 the speaker's face is clear, at 99 and 106 her hand
    covers the mouth and dlib's mouth points follow the box, not the lips: the guide passes over
    those shots (hidden_mouth_penalty), the clear ones are free."""
    from talkinghead.data.landmarks import get_detector, mouth_fit_spread
    from talkinghead.data.video import iter_frames
    from talkinghead.infer.faces import crops_from_sources

    frames = list(iter_frames(shared_faces / "clips" / "pyfeat_wlanger.mp4", max_frames=107))
    faces = crops_from_sources([frames[i] for i in (30, 38, 99, 106)], 128, progress=False)
    spread = mouth_fit_spread(faces.crops, faces.landmarks, get_detector("dlib"))
    assert (spread[:2] < 0.01).all() and (spread[2:] > 0.03).all(), spread
    penalty = WarpGuide().hidden_mouth_penalty(torch.from_numpy(spread), torch.from_numpy(faces.landmarks))
    assert (penalty[:2] == 0).all() and (penalty[2:] > 0.005).all(), penalty

def test_pasted_occluders_cover_the_face_with_the_donor_and_nothing_else():
    size = 64
    marks = _template(size).repeat(4, 1, 1)  # (4, 68, 2)
    guide = torch.rand(4, 4, size, size) * 2 - 1
    donors = torch.full((4, 3, size, size), 0.5)
    assert torch.equal(augment.paste_occluders(guide, donors, marks, 0.0), guide)
    torch.manual_seed(0)
    out = augment.paste_occluders(guide, donors, marks, 1.0)
    assert torch.equal(out[:, 3], guide[:, 3])  # the trust mask still claims a valid warp
    changed = (out[:, :3] != guide[:, :3]).any(dim=1)  # (4, S, S)
    face = warp.head_mask(marks, size) > 0  # (4, S, S)
    eye_distance = float((marks[0, 45] - marks[0, 36]).norm())
    for row in range(4):
        # a hand's worth of pixels: more than a finger, less than the whole face
        assert eye_distance ** 2 * 0.3 < int(changed[row].sum()) < int(face[row].sum())
        covered = (out[row, :3] - donors[row]).abs().amax(dim=0) < 1e-6
        assert int(covered.sum()) > 0.5 * int(changed[row].sum())  # mostly the donor itself
        ys, xs = torch.nonzero(changed[row], as_tuple=True)
        centre = marks[row].mean(0)
        reach = torch.hypot(xs.float() + 0.5 - centre[0], ys.float() + 0.5 - centre[1]).max()
        assert reach < 2.5 * eye_distance  # over the face, not the background
    torch.manual_seed(0)
    half = augment.paste_occluders(guide.repeat(50, 1, 1, 1), donors.repeat(50, 1, 1, 1), marks.repeat(50, 1, 1), 0.5)
    hit = (half != guide.repeat(50, 1, 1, 1)).flatten(1).any(dim=1).float().mean()
    assert 0.35 < float(hit) < 0.65


def test_meta_learning_guides_take_occluders_from_another_episode(synthetic_dataset):
    from torch.utils.data import default_collate

    from talkinghead.data.episodes import EpisodeDataset
    from talkinghead.train.meta import episode_guide, episodes_on_device

    dataset = EpisodeDataset(synthetic_dataset, shots=2, size=64)
    batch = episodes_on_device(default_collate([dataset[0], dataset[len(dataset) - 1]]), torch.device("cpu"))
    plain = episode_guide(dict(batch), WarpGuide())
    torch.manual_seed(0)
    occluded = episode_guide(dict(batch), WarpGuide(), occlusion=1.0)
    assert torch.equal(occluded[:, 3], plain[:, 3])
    changed = (occluded[:, :3] != plain[:, :3]).any(dim=1)  # (2, S, S)
    assert changed.flatten(1).any(dim=1).all()
    donors = batch["target"].roll(1, dims=0)  # each row's occluder is the other row's target
    pasted = (occluded[:, :3] - donors).abs().amax(dim=1) < 1e-6
    assert int((pasted & changed).sum()) > 0.5 * int(changed.sum())
    # one episode alone has no other person to take an occluder from
    single = {k: v[:1] if torch.is_tensor(v) else v for k, v in batch.items()}
    assert torch.equal(episode_guide(dict(single), WarpGuide(), occlusion=1.0), episode_guide(dict(single), WarpGuide()))


def test_shot_distances_are_smoothed_causally_across_frames():
    raw = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    rate = GuideConfig().shot_smoothing
    smoothed = guide.smooth_shot_distances(raw)
    assert torch.equal(smoothed[0], raw[0])  # no history: the first frame as it is
    assert torch.allclose(smoothed[1], rate * raw[1] + (1 - rate) * raw[0])
    # the nearer shot changes at frame 1, the smoothed ranking follows a few frames later
    assert smoothed[1].argmin() == 0 and smoothed[3].argmin() == 1
    assert torch.allclose(guide.smooth_shot_distances(raw[2:], previous=smoothed[1]), smoothed[2:])
    steady = torch.tensor([[0.3, 0.7]]).repeat(5, 1)
    assert torch.allclose(guide.smooth_shot_distances(steady), steady)


def test_consecutive_frames_cross_fade_between_shots(synthetic_dataset, warp_checkpoint):
    """A track whose nearest shot jumps from one frame to the next: rendered as a track, the
    guide moves over gradually; as unrelated poses, each frame takes its own nearest shot."""
    from talkinghead.data.episodes import EpisodeDataset
    from talkinghead.infer.avatar import Avatar

    episode = EpisodeDataset(synthetic_dataset, shots=3, size=64)[1]
    crops = ((_unit(episode["frames"]).permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().astype(np.uint8)
    marks = episode["landmarks"].numpy()
    avatar = Avatar.from_crops(crops, marks, warp_checkpoint, finetune_steps=0, progress=False)
    drive = np.stack([marks[0], marks[0], marks[1], marks[1]])
    bias, state = avatar.renderer().smoothing_bias(torch.from_numpy(drive))
    assert bias.shape == (4, 3) and state.shape == (3,)
    assert torch.equal(bias[:2], torch.zeros(2, 3)) and bias[2].abs().max() > 0
    smoothed = avatar.animate(drive, progress=False)
    separate = avatar.animate(drive, progress=False, consecutive=False)
    assert np.array_equal(smoothed[:2], separate[:2])
    assert not np.array_equal(smoothed[2], separate[2])
    # weight 1 on the newest frame: no cross-fade; a slower fade lags further behind
    assert np.array_equal(avatar.animate(drive, progress=False, shot_smoothing=1.0), separate)
    slow, _ = avatar.renderer().smoothing_bias(torch.from_numpy(drive), rate=0.1)
    assert slow[2].abs().max() > bias[2].abs().max()
    with pytest.raises(TalkingHeadError, match="shot_smoothing"):
        avatar.animate(drive, progress=False, shot_smoothing=0)
    # K = 1: nothing to choose, nothing smoothed
    single = Avatar.from_crops(crops[:1], marks[:1], warp_checkpoint, finetune_steps=0, progress=False)
    assert single.renderer().smoothing_bias(torch.from_numpy(drive)) == (None, None)


@pytest.mark.parametrize("correction", [False, True])
def test_warp_guided_generator_overfits_one_episode(synthetic_dataset, correction):
    from talkinghead.config import get_preset
    from talkinghead.data.episodes import EpisodeDataset
    from talkinghead.models import build_models

    torch.manual_seed(0)
    cfg = get_preset("tiny").override(["model.warp_guidance=true", f"model.warp_correction={correction}"])
    E, G, _ = build_models(cfg.model, num_videos=3)
    episode = {k: _unit(v) if torch.is_tensor(v) else v
               for k, v in EpisodeDataset(synthetic_dataset, shots=2, size=64)[0].items()}
    frames, sketches = episode["frames"][None], episode["sketches"][None]
    guide = WarpGuide()(frames, episode["landmarks"][None], episode["target_landmarks"][None])
    assert guide.shape == (1, 4, 64, 64)
    with pytest.raises(ValueError, match="guide"):
        G(episode["target_sketch"][None], torch.zeros(G.psi_size))
    # A misleading guide (colours inverted) makes G learn to distrust it and synthesise instead.
    guide = torch.cat([-guide[:, :3], guide[:, 3:]], 1)
    opt = torch.optim.Adam(list(E.parameters()) + list(G.parameters()), lr=2e-3)
    losses = []
    for _ in range(60):
        e_hat = E(frames, sketches).mean(1)
        fake = G(episode["target_sketch"][None], G.psi_from_embedding(e_hat), guide)
        loss = (fake - episode["target"][None]).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    warp_only = (guide[:, :3] - episode["target"][None]).abs().mean().item()
    assert losses[-1] < 0.5 * losses[0]
    assert losses[-1] < 0.3 * warp_only


@pytest.fixture(scope="module")
def warp_checkpoint(synthetic_dataset, tmp_path_factory):
    from talkinghead.config import get_preset
    from talkinghead.train.meta import train_meta

    # Two fused shots: the guide path of meta-learning, fine-tuning and the renderer with fusion.
    cfg = get_preset("tiny").override(["model.warp_guidance=true", "model.warp_correction=true",
                                       "model.warp_shots=2", "train.steps=2",
                                       "train.checkpoint_every=2",
                                       "train.log_every=1", "train.image_every=1000"])
    return train_meta(synthetic_dataset, tmp_path_factory.mktemp("warp_run"), cfg, progress=False)


@pytest.mark.parametrize("steps", [0, 3])
def test_warp_guided_avatar_round_trips(synthetic_dataset, warp_checkpoint, tmp_path, steps):
    from talkinghead.data.episodes import EpisodeDataset
    from talkinghead.infer.avatar import Avatar

    episode = EpisodeDataset(synthetic_dataset, shots=3, size=64)[1]
    crops = ((_unit(episode["frames"]).permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().astype(np.uint8)
    avatar = Avatar.from_crops(crops, episode["landmarks"].numpy(), warp_checkpoint, finetune_steps=steps,
                               progress=False)
    drive = np.stack([episode["target_landmarks"].numpy(), episode["landmarks"][0].numpy()])
    frames = avatar.animate(drive, progress=False)
    loaded = Avatar.load(avatar.save(tmp_path / "w.avatar"))
    assert loaded.config.model.warp_guidance and loaded.config.model.warp_correction and loaded.shots == 3
    assert loaded.config.model.warp_shots == 2
    assert avatar.shot_penalty.shape == (3,) and torch.equal(loaded.shot_penalty, avatar.shot_penalty)
    assert np.array_equal(loaded.animate(drive, progress=False), frames)
    # the renderer module (export/live) gives the same frames from sketches and landmarks
    from talkinghead.data.sketch import landmarks_to_sketch, sketch_to_tensor, tensor_to_image

    sketches = torch.stack([sketch_to_tensor(landmarks_to_sketch(m, 64)) for m in drive])
    with torch.no_grad():
        direct = tensor_to_image(loaded.renderer()(sketches, torch.from_numpy(drive)))
    assert np.abs(direct.astype(int) - loaded.animate(drive, progress=False, consecutive=False)).max() <= 1
    # live renders frame by frame, carrying the shot smoothing's state: the same frames as animate
    from talkinghead.infer.live import TorchRenderer

    live = TorchRenderer(loaded)
    assert np.abs(np.stack([live(m) for m in drive]).astype(int) - frames).max() <= 1
    # `live --no-smooth`: shots picked frame by frame, as animate(consecutive=False)
    raw = TorchRenderer(loaded, cross_fade=False)
    separate = loaded.animate(drive, progress=False, consecutive=False)
    assert np.abs(np.stack([raw(m) for m in drive]).astype(int) - separate).max() <= 1
    with pytest.raises(Exception, match="landmarks"):
        loaded.render(sketches)
