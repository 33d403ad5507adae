"""Output above the network's size (infer/detail.py), the head-following paste-back
(infer/paste.py) and --size, on a randomly initialised warp-guided tiny model."""

import av
import numpy as np
import pytest
import torch
from torch import nn

from talkinghead.checkpoint import save_checkpoint
from talkinghead.cli import main
from talkinghead.config import get_preset
from talkinghead.data.synthetic import procedural_track, render_synthetic_face
from talkinghead.errors import TalkingHeadError
from talkinghead.infer.avatar import Avatar
from talkinghead.infer.detail import DetailRenderer, compose_detail, default_output_size, resize
from talkinghead.infer.paste import paste_head, paste_mask
from talkinghead.models import build_models


@pytest.fixture(scope="module")
def guided_checkpoint(tmp_path_factory):
    cfg = get_preset("tiny").override(["model.warp_guidance=true", "model.warp_correction=true",
                                       "model.warp_shots=2"])
    torch.manual_seed(0)
    E, G, D = build_models(cfg.model, num_videos=1)
    return save_checkpoint(tmp_path_factory.mktemp("guided") / "g.safetensors", cfg, {"E": E, "G": G, "D": D}, 0)


def _faces(size, k, seed=0):
    """k synthetic faces at ``size`` px and the landmarks of frames seed·5 … of a talking track."""
    track = procedural_track(size, frames=seed * 5 + max(k, 6))[seed * 5:]
    return np.stack([render_synthetic_face(l, size) for l in track[:k]]), track


@pytest.fixture(scope="module")
def guided_avatar(guided_checkpoint):
    """Two shots at 64 px (the network's size) and the same faces drawn at 256 px."""
    crops, track = _faces(64, 2)
    hi = np.stack([render_synthetic_face(l * 4, 256) for l in track[:2]])
    return Avatar.from_crops(crops, track[:2], guided_checkpoint, finetune_steps=0, progress=False, crops_hi=hi)


class GuideCopy(nn.Module):
    """A warp-guided 'generator' that returns the guide it sees with α = 1 (no correction)."""

    warp_guidance, warp_shots = True, 2

    def forward(self, sketch, psi, guide, return_alpha=False):
        out = guide[:, :3]
        return (out, torch.ones_like(out[:, :1])) if return_alpha else out


def test_alpha_one_without_correction_gives_the_high_resolution_guide(guided_avatar):
    hi = torch.rand(2, 3, 256, 256) * 2 - 1
    lo = resize(hi, 64)
    assert torch.allclose(compose_detail(lo, torch.ones(2, 1, 64, 64), hi, lo), hi, atol=1e-5)
    assert torch.allclose(compose_detail(lo, torch.zeros(2, 1, 64, 64), hi, lo), resize(lo, 256))
    # through the renderer: a G that passes its guide through with α = 1 gives the network's
    # guide enlarged plus the detail of the nearest shot warped at output size
    source = guided_avatar.detail_renderer()
    copy = DetailRenderer(GuideCopy(), source.psi, source.shots, source.shots_hi, source.shot_landmarks,
                          source.shot_penalty, guided_avatar.config.detail)
    marks = torch.from_numpy(_faces(64, 4, seed=3)[1][:3])
    sketches = torch.zeros(3, 3, 64, 64)
    for size in (128, 256):
        out = copy(sketches, marks, size)
        nearest = copy.guide(marks, size, fuse=1)[:, :3]
        expected = resize(copy.guide(marks, 64)[:, :3], size) + nearest - resize(resize(nearest, 64), size)
        assert out.shape == (3, 3, size, size)
        assert torch.allclose(out, expected.clamp(-1, 1), atol=1e-5)
    # one shot: that is the high-resolution warped shot itself, up to how the network's 64-px
    # shot differs from the 256-px one shrunk (here drawn separately: a few grey levels)
    single = DetailRenderer(GuideCopy(), source.psi, source.shots[:1], source.shots_hi[:1],
                            source.shot_landmarks[:1], None, guided_avatar.config.detail)
    out = single(sketches, marks, 256)
    assert (out - single.guide(marks, 256)[:, :3]).abs().mean() < 0.03


def test_batched_and_unbatched_rendering_agree(guided_avatar):
    marks = _faces(64, 5, seed=1)[1][:5]
    one = guided_avatar.animate(marks, batch_size=1, progress=False, size=256)
    many = guided_avatar.animate(marks, batch_size=5, progress=False, size=256)
    assert one.shape == (5, 256, 256, 3)
    assert np.abs(one.astype(int) - many).max() <= 1


@pytest.mark.parametrize("size", [128, 256, 512, 100])
def test_output_sizes(guided_avatar, size):
    marks = _faces(64, 2, seed=2)[1][:2]
    frames = guided_avatar.animate(marks, progress=False, size=size)
    assert frames.shape == (2, size, size, 3) and frames.std() > 5


def test_detail_comes_from_the_high_resolution_shots(guided_avatar):
    """At 256 px the output has the fine texture of the 256-px shots, not an upsampled 64-px image."""
    marks = guided_avatar.landmarks[:1]
    sharp = guided_avatar.animate(marks, progress=False, size=256)[0].astype(np.float32)
    blurred = resize(torch.from_numpy(guided_avatar.animate(marks, progress=False, size=64)[0].astype(np.float32))
                     .permute(2, 0, 1)[None], 256)[0].permute(1, 2, 0).numpy()
    import cv2

    def sharpness(image):
        return cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.CV_32F).var()

    assert sharpness(sharp) > 1.5 * sharpness(blurred)


def test_bad_sizes_are_refused(guided_avatar):
    for bad in (0, -5, 513, 2.5, "256"):
        with pytest.raises(TalkingHeadError, match="size"):
            guided_avatar.animate(guided_avatar.landmarks[:1], progress=False, size=bad)


def test_default_size_is_the_face_resolution_capped():
    assert default_output_size(239.4, 128, 512) == 238  # even, for video encoders
    assert default_output_size(900, 128, 512) == 512
    assert default_output_size(60, 128, 512) == 128
    assert default_output_size(None, 128, 512) == 128


def test_high_resolution_shots_survive_save_and_load_and_old_files_load(guided_avatar, guided_checkpoint, tmp_path):
    path = guided_avatar.save(tmp_path / "a.avatar")
    loaded = Avatar.load(path)
    assert loaded.crops_hi.shape == (2, 256, 256, 3) and (loaded.crops_hi == guided_avatar.crops_hi).all()
    assert loaded.output_size == 256
    marks = guided_avatar.landmarks
    assert np.abs(loaded.animate(marks, progress=False).astype(int) - guided_avatar.animate(marks, progress=False)).max() <= 1
    # a file without crops_hi (as written before them): shots at the network's size
    old = Avatar.from_crops(guided_avatar.crops, guided_avatar.landmarks, guided_checkpoint, finetune_steps=0,
                            progress=False)
    from safetensors.torch import load_file
    assert "crops_hi" not in load_file(str(old.save(tmp_path / "old.avatar")))
    again = Avatar.load(tmp_path / "old.avatar")
    assert again.crops_hi.shape == (2, 64, 64, 3) and again.output_size == 64
    assert again.animate(marks, progress=False, size=128).shape == (2, 128, 128, 3)


def test_from_images_keeps_shots_at_the_face_resolution(astronaut_png, guided_checkpoint):
    """The astronaut's portrait is 512×512; her face's crop square is about 170 px, above the network's 64."""
    avatar = Avatar.from_images(astronaut_png, guided_checkpoint, finetune_steps=0, progress=False)
    side = avatar.crops_hi.shape[1]
    assert 140 < side < 200 and avatar.output_size in (side, side - 1) and avatar.crops.shape[1] == 64
    frames = avatar.animate(avatar.landmarks, progress=False)
    assert frames.shape == (1, avatar.output_size, avatar.output_size, 3) and avatar.output_size % 2 == 0


def test_pasted_region_follows_moved_landmarks():
    landmarks = _faces(256, 1)[1][0]
    image = np.full((400, 600, 3), 255, np.uint8)
    crop = np.zeros((256, 256, 3), np.uint8)
    box = np.array([300.0, 200.0, 256.0])

    def dark_centre(marks):
        out = paste_head(image, crop, box, marks, landmarks)
        ys, xs = np.nonzero(out[..., 0] < 128)
        assert (out[:, :150] == 255).all() and (out[:, 450:] == 255).all()  # outside the crop square: the photo
        return xs.mean(), ys.mean(), len(xs)

    still = dark_centre(landmarks)
    moved = dark_centre(landmarks + np.array([40.0, 0.0], np.float32))
    assert moved[0] > still[0] + 8 and moved[2] > still[2]  # follows the head, and keeps covering where it was
    # the mask is the head, not the whole square: corners of the square keep the photo
    mask = paste_mask(landmarks, landmarks, 256, 0.04)
    assert mask[128, 128] > 0.99 and mask[2, 2] == 0 and mask[250, 5] < 0.05


def test_animate_cli_size(guided_avatar, tmp_path, capsys):
    path = guided_avatar.save(tmp_path / "a.avatar")
    track = tmp_path / "track.npy"
    np.save(track, _faces(64, 4, seed=5)[1][:4])
    out = tmp_path / "o.mp4"
    rc = main(["animate", "--avatar", str(path), "--landmarks", str(track), "--size", "192", "--side-by-side",
               "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (2 * 192, 192)
    capsys.readouterr()
    for bad in ("0", "600", "abc", "-3"):
        with pytest.raises(SystemExit) as exit_:
            main(["animate", "--avatar", str(path), "--landmarks", str(track), "--size", bad,
                  "-o", str(tmp_path / "bad.mp4")])
        rc = exit_.value.code
        err = capsys.readouterr().err
        assert rc == 2 and "--size" in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "bad.mp4").exists()


def test_live_onnx_and_app_routes_render_at_the_size(guided_avatar, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from talkinghead.infer.live import OnnxAvatarRenderer, TorchRenderer
    from talkinghead.webapp.work import live_renderer, render_poses

    marks = _faces(64, 3, seed=4)[1][:3]
    live_torch, live_onnx = TorchRenderer(guided_avatar, size=192), OnnxAvatarRenderer(guided_avatar, size=192)
    pairs = [(live_torch(m).astype(int), live_onnx(m).astype(int)) for m in marks]
    assert pairs[0][0].shape == (192, 192, 3) and pairs[0][1].shape == (192, 192, 3)
    assert max(np.abs(a - b).max() for a, b in pairs) <= 2
    # the live view defaults to the avatar's own output size
    assert TorchRenderer(guided_avatar)(marks[0]).shape == (256, 256, 3)
    # the web app: stills and turns, and its live renderer, at the session's size
    assert render_poses(guided_avatar, marks, 160).shape == (3, 160, 160, 3)
    assert render_poses(guided_avatar, marks).shape == (3, 256, 256, 3)
    assert render_poses(guided_avatar, marks[:1], 1024).shape == (1, 1024, 1024, 3)  # above the cap: enlarged
    assert live_renderer(guided_avatar, 160)(marks[0]).shape == (160, 160, 3)
    # export --onnx --size
    path = guided_avatar.save(tmp_path / "a.avatar")
    rc = main(["export", "--onnx", str(path), "-o", str(tmp_path / "a.onnx"), "--size", "160"])
    out = capsys.readouterr().out
    assert rc == 0 and "160px renderer" in out and "(ok)" in out
    from talkinghead.infer.onnx_export import OnnxRenderer
    sketches = torch.zeros(2, 3, 64, 64).numpy()
    assert OnnxRenderer(tmp_path / "a.onnx")(sketches, marks[:2]).shape == (2, 3, 160, 160)


def test_corrupt_high_resolution_shots_are_one_line(guided_avatar, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = guided_avatar.save(tmp_path / "a.avatar")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    for bad, problem in ((torch.zeros(2, 600, 600, 3, dtype=torch.uint8), "crops_hi are 600 px"),
                         (torch.zeros(3, 256, 256, 3, dtype=torch.uint8), "crops_hi is (3, 256, 256, 3)")):
        save_file({**tensors, "crops_hi": bad}, str(tmp_path / "bad.avatar"), metadata=meta)
        with pytest.raises(TalkingHeadError, match="corrupt avatar file") as err:
            Avatar.load(tmp_path / "bad.avatar")
        assert problem in str(err.value)


def test_at_the_network_size_the_output_is_the_plain_renderers(guided_avatar):
    from talkinghead.data.sketch import landmarks_to_sketch, sketch_to_tensor

    marks = _faces(64, 3, seed=6)[1][:3]
    sketches = torch.stack([sketch_to_tensor(landmarks_to_sketch(m, 64)) for m in marks])
    plain = guided_avatar.render(sketches, marks)
    assert torch.allclose(guided_avatar.render_at(sketches, marks, 64), plain, atol=1e-5)


def test_live_cli_records_at_the_size(guided_avatar, rendered_driver, tmp_path, capsys):
    path = guided_avatar.save(tmp_path / "a.avatar")
    out = tmp_path / "live.mp4"
    rc = main(["live", "--avatar", str(path), "--video", str(rendered_driver),
               "--no-window", "--as-fast-as-possible", "--max-frames", "6", "--size", "96", "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (96, 96)  # the live view is the rendered size


def test_native_protocol_scores_model_warp_and_first_frame(guided_checkpoint, shared_faces, tmp_path, capsys):
    from talkinghead.checkpoint import load_checkpoint
    from talkinghead.eval.native import NativeClip, NativeSettings, evaluate_clip, native_clips, summarise

    clips = native_clips(shared_faces / "manifest.csv", ["macron", "vox_farah"], 256)
    assert [c.identity for c in clips] == ["macron"]  # vox_farah's 224-px clip is below 256
    clip = NativeClip("vox_farah", shared_faces / "clips" / "vox_farah.mp4", 224, 224, 108)
    settings = NativeSettings(shots=(1, 2), frames=3, finetune_steps=0)
    result = evaluate_clip(load_checkpoint(guided_checkpoint), clip, settings)
    assert result["1"]["shots"] == 1 and result["2"]["shots"] == 2 and result["1"]["size"] >= 64
    table = summarise([result], settings.shots)
    for k in (1, 2):
        for method in ("model", "warp", "first frame"):
            row = table[(k, method)]
            assert row["frames"] == 3 and 5 < row["psnr"] < 60 and 0 < row["ssim"] <= 1 and row["sharpness"] > 0
    # the CLI refuses --data with --native, and a missing manifest, in one line
    for argv in (["--native", str(shared_faces / "manifest.csv"), "--data", str(tmp_path)],
                 ["--native", str(tmp_path / "missing.csv")]):
        rc = main(["evaluate", *argv, "-o", str(tmp_path / "report")])
        err = capsys.readouterr().err
        assert rc == 2 and len(err.strip().splitlines()) == 1
