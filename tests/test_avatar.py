"""Few-shot avatars (stage 2) and animation, on the tiny preset."""

import subprocess
import sys

import av
import cv2
import numpy as np
import pytest
import torch

from talkinghead.cli import main
from talkinghead.config import get_preset
from talkinghead.data.episodes import FrameSource, load_videos
from talkinghead.errors import NoFaceError, TalkingHeadError
from talkinghead.infer.avatar import Avatar
from talkinghead.train.meta import train_meta


@pytest.fixture(scope="module")
def tiny_checkpoint(synthetic_dataset, tmp_path_factory):
    cfg = get_preset("tiny").override(["train.steps=4", "train.finetune_steps=30"])
    return train_meta(synthetic_dataset, tmp_path_factory.mktemp("meta"), cfg, progress=False)


def _shots(dataset_root, k, video=0):
    frames = load_videos(dataset_root, min_frames=1)[video].frames
    source = FrameSource(None, augment=False)
    items = [source.load_uint8(*frames[j], False, None) for j in range(k)]
    crops = np.stack([image.permute(1, 2, 0).numpy() for image, _, _ in items])
    landmarks = np.stack([marks.numpy() for _, _, marks in items])
    return crops, landmarks


def _l1(avatar, crops, landmarks):
    rendered = avatar.animate(landmarks, progress=False).astype(np.float32)
    return float(np.abs(rendered - crops.astype(np.float32)).mean())


@pytest.mark.parametrize("steps", [0, 5])
def test_avatar_round_trip_renders_identical_frames(synthetic_dataset, tiny_checkpoint, tmp_path, steps):
    crops, landmarks = _shots(synthetic_dataset, 4)
    avatar = Avatar.from_crops(crops, landmarks, tiny_checkpoint, finetune_steps=steps, progress=False)
    frames = avatar.animate(landmarks, progress=False)
    assert frames.shape == (4, 64, 64, 3) and frames.dtype == np.uint8
    path = avatar.save(tmp_path / "person.avatar")
    loaded = Avatar.load(path)
    assert np.array_equal(loaded.animate(landmarks, progress=False), frames)
    assert loaded.finetune_steps == steps and loaded.shots == 4
    if steps == 0:  # FF stores only person-specific tensors, not G
        assert path.stat().st_size < tiny_checkpoint.stat().st_size / 3


@pytest.mark.parametrize("adversarial", [True, False])
def test_finetuning_lowers_reconstruction_loss(synthetic_dataset, tiny_checkpoint, adversarial):
    import dataclasses

    from talkinghead.checkpoint import load_checkpoint

    ckpt = load_checkpoint(tiny_checkpoint)
    ckpt = dataclasses.replace(ckpt, config=ckpt.config.override([f"train.finetune_adversarial={adversarial}"]))
    crops, landmarks = _shots(synthetic_dataset, 4, video=1)
    ff = Avatar.from_crops(crops, landmarks, ckpt, finetune_steps=0, progress=False)
    ft = Avatar.from_crops(crops, landmarks, ckpt, finetune_steps=40, progress=False)
    l_ff, l_ft = _l1(ff, crops, landmarks), _l1(ft, crops, landmarks)
    assert l_ft < 0.8 * l_ff, (l_ff, l_ft)
    assert ft.finetune_history[-1] < ft.finetune_history[0]


@pytest.mark.parametrize("k", [1, 8, 32])
def test_any_number_of_shots(synthetic_dataset, tiny_checkpoint, k):
    crops, landmarks = _shots(synthetic_dataset, 8)
    reps = -(-k // 8)  # more shots than frames: shifted copies (np.roll by r px, landmarks too)
    crops = np.concatenate([np.roll(crops, r, axis=2) for r in range(reps)])[:k]
    landmarks = np.concatenate([landmarks + np.array([r, 0], np.float32) for r in range(reps)])[:k]
    avatar = Avatar.from_crops(crops, landmarks, tiny_checkpoint, finetune_steps=2, progress=False)
    assert avatar.shots == k and avatar.animate(landmarks[:1], progress=False).shape == (1, 64, 64, 3)


def test_corrupt_and_mismatched_files(synthetic_dataset, tiny_checkpoint, tmp_path):
    crops, landmarks = _shots(synthetic_dataset, 2)
    avatar = Avatar.from_crops(crops, landmarks, tiny_checkpoint, finetune_steps=0, progress=False)
    path = avatar.save(tmp_path / "a.avatar")
    broken = tmp_path / "broken.avatar"
    broken.write_bytes(path.read_bytes()[:200])
    with pytest.raises(TalkingHeadError, match="broken.avatar"):
        Avatar.load(broken)
    other = tmp_path / "other.safetensors"
    other.write_bytes(tiny_checkpoint.read_bytes()[:-1] + b" ")  # same size, other bytes
    with pytest.raises(TalkingHeadError, match="another meta checkpoint"):
        Avatar.load(path, checkpoint=other)
    # a checkpoint of another preset does not fit
    from talkinghead.models import build_models
    from talkinghead.checkpoint import load_checkpoint, load_networks

    _, g_small, _ = build_models(get_preset("small").model, 1)
    with pytest.raises(TalkingHeadError, match="do not fit"):
        load_networks(load_checkpoint(tiny_checkpoint), {"G": g_small})


def test_from_images_on_a_portrait_and_errors(astronaut_png, tiny_checkpoint, tmp_path):
    avatar = Avatar.from_images([astronaut_png], tiny_checkpoint, finetune_steps=0, progress=False)
    lm = avatar.reference_landmarks
    assert avatar.crops.shape == (1, 64, 64, 3)
    assert 8 < lm[:, 0].mean() < 56 and 8 < lm[:, 1].mean() < 56  # face centred in the crop
    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 128, np.uint8))
    with pytest.raises(NoFaceError, match="wall.png"):
        Avatar.from_images([blank], tiny_checkpoint, finetune_steps=0, progress=False)
    # two faces: the largest is used, and it is said
    portrait = cv2.imread(str(astronaut_png))
    big = cv2.resize(portrait[:300, 80:380], (256, 256), interpolation=cv2.INTER_AREA)  # head and shoulders
    small = cv2.resize(cv2.flip(portrait[20:260, 110:350], 1), (160, 160), interpolation=cv2.INTER_AREA)  # a face
    canvas = np.zeros((256, 432, 3), np.uint8)
    canvas[:, :256], canvas[48:208, 264:424] = big, small
    two = tmp_path / "two.png"
    cv2.imwrite(str(two), canvas)
    from talkinghead.infer.faces import crops_from_sources

    faces = crops_from_sources([two], 64, progress=False)
    assert any("picked the largest" in n for n in faces.notes)
    assert faces.source_box[0] < 256  # the crop is around the big face on the left


def test_animate_cli_writes_video_with_audio(rendered_driver, synthetic_dataset, tiny_checkpoint, tmp_path, capsys):
    crops, landmarks = _shots(synthetic_dataset, 2)
    avatar_path = Avatar.from_crops(crops, landmarks, tiny_checkpoint, finetune_steps=0,
                                    progress=False).save(tmp_path / "p.avatar")
    driving = rendered_driver  # 48 frames at 25 fps, with audio
    out = tmp_path / "out.mp4"
    rc = main(["animate", "--avatar", str(avatar_path), "--driving", str(driving), "-o", str(out),
               "--side-by-side"])
    text = capsys.readouterr()
    assert rc == 0, text.err
    # the tracking summary: every frame accounted for (this clip's face is never lost)
    assert "tracking: 48 frames, " in text.out and " 0 held, 0 lost" in text.out, text.out
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        frames = sum(1 for _ in c.decode(video=0))
        assert frames == 48 and float(v.average_rate) == pytest.approx(25.0)
        assert v.codec_context.height == 64 and v.codec_context.width == 64 * 3
        assert len(c.streams.audio) == 1
    # puppeteering from a .npy track, no audio
    track = tmp_path / "track.npy"
    np.save(track, np.repeat(landmarks[:1], 10, axis=0))
    rc = main(["animate", "--avatar", str(avatar_path), "--landmarks", str(track), "--fps", "10",
               "-o", str(tmp_path / "p.mp4")])
    assert rc == 0
    with av.open(str(tmp_path / "p.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 10


def test_animate_cli_bad_inputs(tmp_path, tiny_checkpoint, capsys):
    rc = main(["animate", "--avatar", str(tmp_path / "missing.avatar"), "--landmarks", "x.npy",
               "-o", str(tmp_path / "o.mp4")])
    assert rc == 2 and "missing.avatar" in capsys.readouterr().err
    bad = tmp_path / "t.npy"
    np.save(bad, np.zeros((5, 10, 2)))
    avatar = tmp_path / "a.avatar"
    crops = np.zeros((1, 64, 64, 3), np.uint8)
    from talkinghead.data.synthetic import template_landmarks

    Avatar.from_crops(crops, template_landmarks(64)[None], tiny_checkpoint, finetune_steps=0,
                      progress=False).save(avatar)
    rc = main(["animate", "--avatar", str(avatar), "--landmarks", str(bad), "-o", str(tmp_path / "o.mp4")])
    err = capsys.readouterr().err
    assert rc == 2 and "t.npy" in err and "(T, 68, 2)" in err
    assert not (tmp_path / "o.mp4").exists()


def test_exported_checkpoint_is_small_and_makes_the_same_avatar(synthetic_dataset, tiny_checkpoint, tmp_path):
    from talkinghead.checkpoint import export_checkpoint, load_checkpoint

    shipped = export_checkpoint(tiny_checkpoint, tmp_path / "shipped.safetensors")
    ckpt = load_checkpoint(shipped)
    assert not any(k.startswith(("optim.", "D.W")) for k in ckpt.tensors)
    assert all(v.dtype == torch.float16 for v in ckpt.tensors.values() if v.is_floating_point())
    assert shipped.stat().st_size < tiny_checkpoint.stat().st_size / 2
    crops, landmarks = _shots(synthetic_dataset, 2)
    full = Avatar.from_crops(crops, landmarks, tiny_checkpoint, finetune_steps=3, progress=False)
    small = Avatar.from_crops(crops, landmarks, shipped, finetune_steps=3, progress=False)
    diff = np.abs(full.animate(landmarks, progress=False).astype(int) - small.animate(landmarks, progress=False))
    assert diff.mean() < 3  # fp16 rounding only


def test_export_cli_sets_finetuning_defaults(tiny_checkpoint, tmp_path, capsys):
    from talkinghead.checkpoint import load_checkpoint

    out = tmp_path / "model.safetensors"
    rc = main(["export", str(tiny_checkpoint), "-o", str(out), "--set", "train.finetune_steps=7",
               "train.finetune_adversarial=false"])
    assert rc == 0 and "step 4" in capsys.readouterr().out
    config = load_checkpoint(out).config
    assert config.train.finetune_steps == 7 and config.train.finetune_adversarial is False
    assert config.model == load_checkpoint(tiny_checkpoint).config.model
    rc = main(["export", str(tiny_checkpoint), "-o", str(tmp_path / "x.safetensors"), "--set", "model.base_channels=8"])
    assert rc == 2 and "model.*" in capsys.readouterr().err and not (tmp_path / "x.safetensors").exists()


def test_paste_back_puts_the_face_into_the_full_image(astronaut_png, tiny_checkpoint, tmp_path, capsys):
    from talkinghead.infer.driving import paste_back

    image = np.full((300, 400, 3), 200, np.uint8)
    crop = np.zeros((64, 64, 3), np.uint8)
    out = paste_back(image, crop, np.array([200.0, 150.0, 128.0]))
    assert out.shape == image.shape
    assert out[150, 200].max() < 20  # centre of the box: the crop
    assert (out[:40] == 200).all() and (out[:, :100] == 200).all()  # far outside: untouched
    # through the CLI: an avatar made from a portrait, pasted back into the portrait
    source = astronaut_png
    track = tmp_path / "track.npy"
    from talkinghead.data.synthetic import procedural_track

    np.save(track, procedural_track(200, frames=5))
    rc = main(["animate", "--source", str(source), "--checkpoint", str(tiny_checkpoint), "--steps", "0",
               "--landmarks", str(track), "--paste-back", "-o", str(tmp_path / "pasted.mp4")])
    assert rc == 0, capsys.readouterr().err
    with av.open(str(tmp_path / "pasted.mp4")) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (512, 512)
        assert sum(1 for _ in c.decode(video=0)) == 5


def test_finetune_warp_moves_landmarks_with_the_image():
    """The fine-tuning warp moves landmarks exactly as it moves pixels: a sketch warped as an
    image matches the sketch redrawn from the moved landmarks."""
    import numpy as np
    import torch

    from talkinghead.data.sketch import landmarks_to_sketch_batch
    from talkinghead.data.synthetic import template_landmarks
    from talkinghead.train.finetune import random_similarity_warp

    marks = torch.tensor(np.stack([template_landmarks(128)] * 4), dtype=torch.float32)
    sketches = landmarks_to_sketch_batch(marks.numpy(), 128)
    warped, moved = random_similarity_warp(sketches, marks, torch.Generator().manual_seed(1), 1.0)
    redrawn = landmarks_to_sketch_batch(moved.numpy(), 128)
    assert warped.shape == sketches.shape and moved.shape == marks.shape
    assert 1.0 < (moved - marks).abs().mean() < 10.0  # it really moved them, by a few pixels
    assert (warped - redrawn).abs().mean() < 0.25 * (sketches - redrawn).abs().mean()
    same, _ = random_similarity_warp(sketches, marks, torch.Generator().manual_seed(1), 0.0)
    assert torch.allclose(same, sketches, atol=1e-5)


def test_jaw_drop_opens_the_mouth_and_moves_pixels_with_landmarks():
    """The one-shot jaw-drop augmentation moves only the chin, jaw and lower lip, downwards and
    by at most 0.7 × the eye distance, and the pixels follow: a sketch warped as an image is
    close to the sketch redrawn from the moved landmarks, and the upper face is untouched."""
    import numpy as np
    import torch

    from talkinghead.data.sketch import landmarks_to_sketch_batch
    from talkinghead.data.synthetic import template_landmarks
    from talkinghead.train.finetune import random_jaw_drop

    marks = torch.tensor(np.stack([template_landmarks(128)] * 4), dtype=torch.float32)
    sketches = landmarks_to_sketch_batch(marks.numpy(), 128)
    warped, moved = random_jaw_drop(sketches, marks, torch.Generator().manual_seed(3), 1.0)
    shift = moved - marks
    iod = float((marks[0, 45] - marks[0, 36]).norm())
    assert torch.all(shift[..., 0] == 0) and torch.all(shift[..., 1] >= 0)  # straight down
    assert float(shift[:, 8, 1].max()) > 0.2 * iod and float(shift[..., 1].max()) <= 0.7 * iod + 1e-4
    upper = [i for i in range(68) if i not in range(4, 13) and i not in (48, 54, 55, 56, 57, 58, 59, 60, 64, 65, 66, 67)]
    assert torch.all(shift[:, upper] == 0)  # eyes, brows, nose, upper lip stay
    # the pixels follow (approximately: the field is a smooth interpolation of the moves): the
    # jaw line in the chin's column drops with the chin landmark
    big = int(shift[:, 8, 1].argmax())
    x, y0, y1 = int(round(float(marks[big, 8, 0]))), float(marks[big, 8, 1]), float(moved[big, 8, 1])
    column = warped[big].sum(0)[:, x]
    y_pixels = int(y0) - 3 + int(column[int(y0) - 3:].argmax())
    assert y_pixels - y0 > 0.6 * (y1 - y0) and abs(y_pixels - y1) < abs(y_pixels - y0)
    redrawn = landmarks_to_sketch_batch(moved.numpy(), 128)
    assert (warped - redrawn).abs().mean() < 0.9 * (sketches - redrawn).abs().mean()
    brow_line = int(marks[0, 17:27, 1].min()) - 2
    assert torch.allclose(warped[..., :brow_line, :], sketches[..., :brow_line, :], atol=1e-3)
    same, unmoved = random_jaw_drop(sketches, marks, torch.Generator().manual_seed(3), 0.0)
    assert torch.allclose(same, sketches, atol=1e-4) and torch.equal(unmoved, marks)


def test_finetuning_with_jaw_drop_and_warp_runs_on_one_shot(synthetic_dataset, tiny_checkpoint):
    import dataclasses

    from talkinghead.checkpoint import load_checkpoint

    ckpt = load_checkpoint(tiny_checkpoint)
    ckpt = dataclasses.replace(ckpt, config=ckpt.config.override(["train.finetune_jaw_drop=1.0"]))
    crops, landmarks = _shots(synthetic_dataset, 1)
    avatar = Avatar.from_crops(crops, landmarks, ckpt, finetune_steps=3, progress=False)
    assert len(avatar.finetune_history) == 3 and all(np.isfinite(avatar.finetune_history))
    assert avatar.animate(landmarks, progress=False).shape == (1, 64, 64, 3)


def test_set_changes_finetuning_settings_but_not_the_architecture(synthetic_dataset, tiny_checkpoint, tmp_path,
                                                                  capsys):
    crops, landmarks = _shots(synthetic_dataset, 1)
    avatar = Avatar.from_crops(crops, landmarks, tiny_checkpoint, finetune_steps=2, progress=False,
                               overrides=["train.finetune_jaw_drop=0.5", "train.finetune_adversarial=false"])
    assert avatar.config.train.finetune_jaw_drop == 0.5 and not avatar.config.train.finetune_adversarial
    loaded = Avatar.load(avatar.save(tmp_path / "a.avatar"))
    assert loaded.config.train.finetune_jaw_drop == 0.5  # the avatar records how it was made
    with pytest.raises(TalkingHeadError, match=r"only train\.\*, loss\.\* and guide\.\*"):
        Avatar.from_crops(crops, landmarks, tiny_checkpoint, overrides=["model.image_size=128"])
    # CLI: the bad setting is reported before any face detection, in one line
    rc = main(["finetune", str(tmp_path / "not_there.jpg"), "--checkpoint", str(tiny_checkpoint),
               "--set", "model.image_size=128", "-o", str(tmp_path / "b.avatar")])
    err = capsys.readouterr().err
    assert rc == 2 and "--set model.image_size=128" in err and len(err.strip().splitlines()) == 1
    rc = main(["animate", "--avatar", str(tmp_path / "a.avatar"), "--landmarks", "x.npy", "--set",
               "train.finetune_steps=5", "-o", str(tmp_path / "o.mp4")])
    err = capsys.readouterr().err
    assert rc == 2 and "needs --source" in err and not (tmp_path / "o.mp4").exists()
    assert not (tmp_path / "b.avatar").exists()


def test_animate_track_adapts_a_drivers_landmarks_as_the_cli_does(astronaut_avatar):
    """A track in the driver's pixels: ``animate`` refuses it with the fix in the message;
    ``animate_track`` maps it onto the face (smoothed, relative), as ``animate_to_video`` does."""
    from talkinghead.infer.bundled import ASSETS
    from talkinghead.infer.driving import DrivingTrack, smoothed
    from talkinghead.infer.reenact import adapt_landmarks

    track = np.load(ASSETS / "demo_track.npy")[:6]  # the driver's own pixels (a 512-px video)
    assert track.max() > 1.5 * astronaut_avatar.size
    with pytest.raises(TalkingHeadError, match="animate_track|adapt_landmarks"):
        astronaut_avatar.animate(track, progress=False)
    frames = astronaut_avatar.animate_track(track, progress=False)
    expected = astronaut_avatar.animate(
        adapt_landmarks(smoothed(DrivingTrack(track, 25.0, 0)).landmarks, astronaut_avatar.reference_landmarks),
        progress=False)
    size = astronaut_avatar.check_size(None)  # the default output size, as animate's
    assert frames.shape == (6, size, size, 3)
    np.testing.assert_array_equal(frames, expected)


def test_landmarks_to_sketch_picks_a_size_that_holds_the_face(astronaut_avatar):
    from talkinghead import landmarks_to_sketch

    sketch = landmarks_to_sketch(astronaut_avatar.landmarks[0])
    assert sketch.shape == (astronaut_avatar.size, astronaut_avatar.size, 3) and sketch.any()
    np.testing.assert_array_equal(sketch, landmarks_to_sketch(astronaut_avatar.landmarks[0], astronaut_avatar.size))


def test_finetune_summary_says_shot_and_explains_a_rising_loss():
    from talkinghead.commands.finetune import describe_finetuning

    assert describe_finetuning(1, []).startswith("1 shot, feed-forward")
    rising = describe_finetuning(1, [0.9] * 5 + [1.1] * 5)
    assert rising.startswith("1 shot, 10 steps, content loss 0.900 -> 1.100") and "it can rise" in rising
    assert "rise" not in describe_finetuning(8, [1.0, 0.5]) and "8 shots" in describe_finetuning(8, [1.0, 0.5])
