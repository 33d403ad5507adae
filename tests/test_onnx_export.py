"""ONNX export of an avatar's renderer, checked against PyTorch with onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest

from talkinghead.cli import main

onnx = pytest.importorskip("onnx", reason='ONNX tests need the [app] extra: pip install -e ".[test]"')
pytest.importorskip("onnxruntime", reason='ONNX tests need the [app] extra: pip install -e ".[test]"')


@pytest.fixture(scope="module")
def avatar_file(tmp_path_factory):
    from skimage import data

    from talkinghead.infer.avatar import Avatar
    from talkinghead.infer.bundled import BUNDLED_CHECKPOINT

    avatar = Avatar.from_images([data.astronaut()], BUNDLED_CHECKPOINT, finetune_steps=0, device="cpu",
                                progress=False)
    return avatar.save(tmp_path_factory.mktemp("onnx") / "astronaut.avatar")


def test_onnx_matches_pytorch_with_both_inputs(avatar_file, tmp_path):
    import torch

    from talkinghead.infer.avatar import Avatar
    from talkinghead.infer.onnx_export import OnnxRenderer, _test_inputs, export_onnx, verify_onnx

    avatar = Avatar.load(avatar_file, device="cpu")
    path = export_onnx(avatar, tmp_path / "a.onnx")
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == ["sketches", "landmarks", "shot_bias"]
    runtime = OnnxRenderer(path)
    sketches, landmarks = _test_inputs(avatar, 3, seed=1)  # batch 3: the batch axis is dynamic
    with torch.inference_mode():  # by default at the avatar's output size (its photo's face resolution)
        expected = avatar.sized_renderer()(sketches, landmarks).numpy()
    got = runtime(sketches.numpy(), landmarks.numpy())
    assert avatar.output_size > avatar.size  # the output-resolution detail layer is in the graph
    assert got.shape == (3, 3, avatar.output_size, avatar.output_size)
    assert np.abs(got - expected).max() <= 1e-3
    assert got.std() > 0.1  # a picture, not a constant
    check = verify_onnx(avatar, path, frames=4)
    assert check["max_abs_diff"] <= 1e-3 and check["torch_fps"] > 0 and check["onnxruntime_fps"] > 0


def test_export_onnx_cli(avatar_file, tmp_path, capsys):
    out = tmp_path / "astronaut.onnx"
    assert main(["export", "--onnx", str(avatar_file), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "(ok)" in text and "frames/s" in text
    assert out.is_file() and not list(tmp_path.glob(".*tmp*"))


def test_export_onnx_cli_bad_input(avatar_file, tmp_path, capsys):
    assert main(["export", "--onnx", str(avatar_file), "-o", str(tmp_path / "a.bin")]) == 2
    assert "must be an .onnx file" in capsys.readouterr().err
    assert main(["export", "--onnx", str(tmp_path / "missing.avatar"), "-o", str(tmp_path / "a.onnx")]) == 2
    assert "missing.avatar: avatar file not found" in capsys.readouterr().err
    assert not (tmp_path / "a.onnx").exists()


@pytest.mark.parametrize("fused", [1, 2])
def test_warp_guided_avatar_exports_with_its_warp(tmp_path, fused):
    """A warp-guided avatar's renderer warps its shots (one, or two fused) onto the landmarks:
    the ONNX graph reads the landmarks input and matches PyTorch."""
    from talkinghead.config import get_preset
    from talkinghead.data.synthetic import procedural_track, render_synthetic_face
    from talkinghead.infer.avatar import Avatar
    from talkinghead.infer.onnx_export import export_onnx, verify_onnx
    from talkinghead.models import build_models
    from talkinghead.train.checkpoint import save_checkpoint

    cfg = get_preset("tiny").override(["model.warp_guidance=true", f"model.warp_shots={fused}"])
    E, G, D = build_models(cfg.model, num_videos=1)
    ckpt = save_checkpoint(tmp_path / "warp.safetensors", cfg, {"E": E, "G": G, "D": D}, 0)
    track = procedural_track(cfg.model.image_size, frames=3)
    crops = np.stack([render_synthetic_face(l, cfg.model.image_size) for l in track])
    avatar = Avatar.from_crops(crops, track, ckpt, finetune_steps=0, device="cpu", progress=False)
    path = export_onnx(avatar, tmp_path / "warp.onnx")
    model = onnx.load(str(path))
    used = {name for node in model.graph.node for name in node.input}
    assert "landmarks" in used and "shot_bias" in used  # the warp reads them
    check = verify_onnx(avatar, path, frames=3)
    assert check["max_abs_diff"] <= 1e-3, check
    # the shot cross-fade's bias goes through the graph as through PyTorch, and live's ONNX
    # renderer, carrying its state frame to frame, renders a track as live's PyTorch one does
    import torch

    from talkinghead.infer.live import OnnxAvatarRenderer, TorchRenderer
    from talkinghead.infer.onnx_export import OnnxRenderer, _test_inputs

    sketches, landmarks = _test_inputs(avatar, 3, seed=2)
    bias = torch.tensor([[0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]])
    with torch.inference_mode():
        expected = avatar.renderer()(sketches, landmarks, bias).numpy()
        unbiased = avatar.renderer()(sketches, landmarks).numpy()
    assert np.abs(expected - unbiased).max() > 0.05  # the bias picks other shots
    got = OnnxRenderer(path)(sketches.numpy(), landmarks.numpy(), bias.numpy())
    assert np.abs(got - expected).max() <= 1e-3
    drive = track[[0, 0, 1, 2, 2]]
    live_torch, live_onnx = TorchRenderer(avatar), OnnxAvatarRenderer(avatar)
    frames = [(live_torch(m).astype(int), live_onnx(m).astype(int)) for m in drive]
    assert max(np.abs(a - b).max() for a, b in frames) <= 2
