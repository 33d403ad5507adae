"""The learned mouth interior: canonical mouth crops, the mouth generator, its file and its training."""

import numpy as np
import pytest
import torch

from talkinghead.config import MouthNetConfig
from talkinghead.data.mouth import apply_affine, cut_mouth, inner_lip_polygon_mask, mouth_crop_matrix
from talkinghead.data.synthetic import move_landmarks, render_synthetic_face, template_landmarks
from talkinghead.errors import TalkingHeadError
from talkinghead.models.mouth import MouthGenerator

TINY = MouthNetConfig(size=32, channels=(8, 16))


def open_face(size: int, gap: float = 0.06, angle: float = 0.0):
    marks = move_landmarks(template_landmarks(size, mouth_open=gap), angle_deg=angle).astype(np.float64)
    return render_synthetic_face(marks, size), marks


def test_mouth_crop_is_level_centred_and_the_same_width_at_any_face_size():
    for size, angle in ((128, 0.0), (512, 12.0)):
        _, marks = open_face(size, angle=angle)
        matrix = mouth_crop_matrix(marks, 96, 0.7)
        corners = apply_affine(matrix, marks[[48, 54]])
        assert corners[1, 0] - corners[0, 0] == pytest.approx(0.7 * 96, rel=1e-6)
        assert corners[1, 1] == pytest.approx(corners[0, 1], abs=1e-6)  # level
        assert apply_affine(matrix, marks[60:68]).mean(0) == pytest.approx([47.5, 47.5], abs=1e-6)


def test_cut_mouth_low_passes_a_large_mouth_and_shows_the_open_lips():
    image, marks = open_face(512)
    crop, matrix = cut_mouth(image, marks, 96, 0.7)
    assert crop.shape == (96, 96, 3) and crop.dtype == np.uint8
    inside = inner_lip_polygon_mask(apply_affine(matrix, marks[60:68]), (96, 96)) > 0.5
    assert inside.sum() > 100
    mouth = image[inner_lip_polygon_mask(marks[60:68], image.shape[:2]) > 0.5].mean(0)
    assert np.abs(crop[inside].mean(0) - mouth).max() < 25  # the crop shows what is between the lips


def test_polygon_mask_grows_and_softens():
    _, marks = open_face(128)
    plain = inner_lip_polygon_mask(marks[60:68], (128, 128))
    grown = inner_lip_polygon_mask(marks[60:68], (128, 128), grow=3)
    soft = inner_lip_polygon_mask(marks[60:68], (128, 128), grow=3, soft=1.5)
    assert grown.sum() > plain.sum() * 1.2 > 0
    assert ((soft > 0.01) & (soft < 0.99)).sum() > ((grown > 0.01) & (grown < 0.99)).sum()


def test_generator_keeps_everything_outside_the_mask():
    net = MouthGenerator(TINY)
    target, shot = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, 12:20, 8:24] = 1
    out = net.fill(target, mask, shot, mask)
    assert out.shape == (2, 3, 32, 32)
    assert torch.equal(out[..., :12, :], target[..., :12, :])
    assert not torch.equal(out[..., 12:20, 8:24], target[..., 12:20, 8:24])
    with pytest.raises(ValueError, match="divisible"):
        MouthGenerator(MouthNetConfig(size=33, channels=(8, 16)))


def test_mouth_generator_overfits_a_batch():
    from talkinghead.train.mouth import masked_l1

    torch.manual_seed(0)
    net = MouthGenerator(TINY)
    # four different smooth "mouths": their insides must be remembered from the context alone
    real = torch.nn.functional.interpolate(torch.rand(4, 3, 4, 4) * 2 - 1, size=32, mode="bilinear")
    mask = torch.zeros(4, 1, 32, 32)
    mask[:, :, 10:22, 6:26] = 1
    shot = torch.rand(4, 3, 32, 32) * 2 - 1
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(300):
        loss = masked_l1(net.fill(real, mask, shot, mask), real, mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


def test_mouth_file_round_trip_and_clear_errors(tmp_path):
    from talkinghead.checkpoint import load_mouth_checkpoint, save_mouth_checkpoint

    net = MouthGenerator(TINY)
    path = save_mouth_checkpoint(tmp_path / "m.safetensors", TINY, net.state_dict(), 7, {"note": 1}, half=True)
    config, state, extra = load_mouth_checkpoint(path)
    assert config == TINY and extra == {"note": 1}
    again = MouthGenerator(config)
    again.load_state_dict(state)
    x = torch.rand(1, 8, 32, 32)
    assert torch.allclose(again(x), net(x), atol=1e-2)
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(TalkingHeadError, match="junk.safetensors: corrupt mouth model"):
        load_mouth_checkpoint(tmp_path / "junk.safetensors")
    with pytest.raises(TalkingHeadError, match="mouth model not found"):
        load_mouth_checkpoint(tmp_path / "missing.safetensors")
    with pytest.raises(TalkingHeadError, match="size"):
        MouthNetConfig.from_dict({"size": 100000, "channels": [8, 16]})


def test_learned_interior_changes_only_open_mouths_and_only_around_them():
    from talkinghead.infer.mouth_interior import LearnedInterior

    torch.manual_seed(0)
    net = MouthGenerator(MouthNetConfig(size=32, channels=(8, 16)))
    shot, shot_marks = open_face(256, gap=0.0)
    frames, marks = zip(*(open_face(256, gap=g) for g in (0.0, 0.07)))
    frames, marks = np.stack(frames), np.stack(marks)
    out = LearnedInterior(net, shot, shot_marks).fill(frames.copy(), marks, np.array([0.0, 1.0]))
    assert np.array_equal(out[0], frames[0])
    changed = np.abs(out[1].astype(int) - frames[1]).sum(-1) > 0
    near = inner_lip_polygon_mask(marks[1][60:68], (256, 256), grow=12) > 0
    assert changed.sum() > 50 and not (changed & ~near).any()


def test_train_mouth_command_writes_a_loadable_model(tmp_path):
    from conftest import make_synthetic_dataset
    from talkinghead.checkpoint import load_mouth_checkpoint
    from talkinghead.cli import main

    data = make_synthetic_dataset(tmp_path / "data", videos=2, frames=6, size=128)
    out = tmp_path / "mouth.safetensors"
    assert main(["train-mouth", str(data), "--out", str(out), "--steps", "3", "--batch-size", "2", "--no-progress"]) == 0
    config, state, extra = load_mouth_checkpoint(out)
    assert config == MouthNetConfig() and extra["train"]["steps"] == 3 and state
    small = tmp_path / "small.safetensors"
    assert main(["train-mouth", str(data), "--out", str(small), "--steps", "2", "--batch-size", "2", "--no-progress",
                 "--distill-from", str(out), "--channels", "8", "16"]) == 0
    assert load_mouth_checkpoint(small)[0].channels == (8, 16)
    assert main(["train-mouth", str(data), "--out", str(small), "--init-from", str(out), "--channels", "8", "16"]) == 2
    assert main(["train-mouth", str(tmp_path / "nothing"), "--out", str(out), "--steps", "1"]) == 2


def test_mouth_settings_fail_clearly(astronaut_avatar, tmp_path):
    from talkinghead.config import Config

    with pytest.raises(TalkingHeadError, match="mouth.interior must be 'learned' or 'drawn'"):
        Config().override(["mouth.interior=painted"])
    base = astronaut_avatar.reference_landmarks[None].astype(np.float64)
    from talkinghead.infer.expression import open_mouth

    wide = open_mouth(base, 1.0, 0.5).astype(np.float32)
    mouth = astronaut_avatar.config.mouth
    try:
        mouth.weights = str(tmp_path / "missing.safetensors")
        with pytest.raises(TalkingHeadError, match="missing.safetensors: mouth model not found"):
            astronaut_avatar.animate(wide, progress=False, consecutive=False)
    finally:
        mouth.weights = ""


def test_learned_interior_runs_alike_in_onnxruntime_and_pytorch():
    pytest.importorskip("onnxruntime")
    from talkinghead.infer.mouth_interior import LearnedInterior

    torch.manual_seed(0)
    net = MouthGenerator(MouthNetConfig(size=32, channels=(8, 16)))
    shot, shot_marks = open_face(256, gap=0.0)
    frame, marks = open_face(256, gap=0.07)
    fast = LearnedInterior(net, shot, shot_marks)
    plain = LearnedInterior(net, shot, shot_marks)
    plain.session = None
    assert fast.session is not None
    a = fast.fill(frame[None].copy(), marks[None], np.ones(1))
    b = plain.fill(frame[None].copy(), marks[None], np.ones(1))
    assert np.abs(a.astype(int) - b).max() <= 1 and not np.array_equal(a, frame[None])
