"""The bundled model and `talkinghead demo`: what a new user runs first."""

from __future__ import annotations

import dataclasses

import av
import numpy as np
import pytest
import torch

from talkinghead.cli import main
from talkinghead.infer.bundled import BUNDLED_CHECKPOINT


@pytest.fixture(scope="module")
def bundled():
    from talkinghead.checkpoint import load_checkpoint

    if not BUNDLED_CHECKPOINT.is_file():
        pytest.fail(f"the bundled model is missing: {BUNDLED_CHECKPOINT}")
    return load_checkpoint(BUNDLED_CHECKPOINT)


def test_bundled_model_is_a_small_inference_export(bundled):
    assert BUNDLED_CHECKPOINT.stat().st_size < 25 * 2**20
    assert bundled.config.preset == "small" and bundled.step > 0
    assert bundled.has("E") and bundled.has("G") and bundled.has("D")
    assert "D.W" not in bundled.tensors  # per-video rows of the training set are not shipped
    assert not any(k.startswith("optim.") for k in bundled.meta)
    assert all(torch.isfinite(t.float()).all() for t in bundled.tensors.values())


def test_bundled_model_draws_a_face_not_noise(bundled):
    """Feed-forward (no fine-tuning) on the demo portrait: dlib finds a face in the rendering
    where the source's landmarks say, and it is closer to the photo than its mean colour.
    A randomly initialised model of the same preset does neither."""
    from talkinghead.data.landmarks import get_detector
    from talkinghead.eval.metrics import detect_landmarks_on_images, nme
    from talkinghead.infer.avatar import Avatar
    from talkinghead.infer.demo import bundled_source
    from talkinghead.infer.faces import crops_from_sources
    from talkinghead.models import build_models

    faces = crops_from_sources([bundled_source()], bundled.config.model.image_size, progress=False)
    torch.manual_seed(0)
    E, G, _ = build_models(bundled.config.model, num_videos=1)
    random_init = dataclasses.replace(bundled, tensors={
        **{f"E.{k}": v for k, v in E.state_dict().items()}, **{f"G.{k}": v for k, v in G.state_dict().items()}})
    detector = get_detector("dlib")
    results = {}
    for name, checkpoint in [("bundled", bundled), ("random", random_init)]:
        avatar = Avatar.from_crops(faces.crops, faces.landmarks, checkpoint, finetune_steps=0, progress=False)
        out = avatar.animate(avatar.landmarks, progress=False)
        found_marks, found = detect_landmarks_on_images(out, avatar.landmarks, detector)
        error = float(np.abs(out.astype(float) - avatar.crops).mean())
        results[name] = (bool(found[0]), found_marks, error)
    crops = avatar.crops.astype(float)
    mean_colour_error = float(np.abs(crops - crops.mean(axis=(1, 2), keepdims=True)).mean())
    found, marks, error = results["bundled"]
    assert found and float(nme(marks, avatar.landmarks)[0]) < 0.15
    assert error < 0.95 * mean_colour_error
    random_found, _, random_error = results["random"]
    print(f"bundled error {error:.2f}, random {random_error:.2f}, mean colour {mean_colour_error:.2f}")
    if bundled.config.model.warp_guidance:
        # A random warp-guided G passes most of the warped shot through, with noise on top; the
        # trained one must be much closer to the photo.
        assert error < 0.5 * random_error
    else:  # a random paper G draws noise
        assert not random_found and random_error > mean_colour_error


def test_demo_cli_writes_video_and_strip(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--frames", "8", "--steps", "2"])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    assert "self-check" in printed.out
    with av.open(str(out / "demo.mp4")) as c:
        v = c.streams.video[0]
        # sketch | result, at the resolution the photo gives her face (its crop square, 168 px), not 128
        assert (v.codec_context.width, v.codec_context.height) == (2 * 168, 168)
        assert sum(1 for _ in c.decode(video=0)) == 8
    from PIL import Image

    with Image.open(out / "demo.png") as strip:
        assert strip.size == (8 * 168, 2 * 168)
    assert sorted(p.name for p in out.iterdir()) == ["demo.mp4", "demo.png"]  # no temp files left


def test_demo_cli_missing_driving_video(tmp_path, capsys):
    rc = main(["demo", "--out", str(tmp_path), "--driving", str(tmp_path / "nope.mp4")])
    err = capsys.readouterr().err
    assert rc == 2 and "nope.mp4" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "demo.mp4").exists()
