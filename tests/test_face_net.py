"""dlib face recognition ResNet port: parity with dlib, file errors, gradients."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from talkinghead.errors import TalkingHeadError
from talkinghead.losses import face_net
from talkinghead.losses.face_net import (
    DlibFaceResNet,
    FaceFeatures,
    find_dlib_face_model,
    load_dlib_face_resnet,
    parse_dlib_face_model,
)



def _model_path() -> Path:
    path = find_dlib_face_model()
    if path is None or not path.is_file():
        pytest.skip("dlib face recognition model not installed")
    return path


@pytest.fixture(scope="module")
def net() -> DlibFaceResNet:
    return load_dlib_face_resnet(_model_path())


def test_reader_decodes_dlib_ints_and_floats():
    r = face_net._Reader(bytes.fromhex("0100 0196 8105 030ad7a3811c 0102"))
    assert r.int() == 0
    assert r.int() == 150
    assert r.int() == -5
    assert r.float() == pytest.approx(0.04, rel=1e-7)  # mantissa 0xa3d70a, exponent -28
    assert r.int() == 2


def test_parity_with_dlib_descriptor(net, astronaut_png, rendered_driver):
    """Our port and dlib give the same descriptor on two faces: the astronaut, and a frame of
    the bundled model's rendering of her, mirrored (another pose, another picture)."""
    dlib = pytest.importorskip("dlib")
    from PIL import Image

    from talkinghead.data.video import read_frames

    model = _model_path()
    landmarks = model.parent / "shape_predictor_5_face_landmarks.dat"
    if not landmarks.is_file():
        pytest.skip("dlib's 5-point landmark model not installed")
    rendered = np.ascontiguousarray(read_frames(rendered_driver, max_frames=1)[0][:, ::-1])
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(landmarks))
    recognizer = dlib.face_recognition_model_v1(str(model))
    chips, refs = [], []
    for name, image in (("astronaut", np.asarray(Image.open(astronaut_png).convert("RGB"))),
                        ("rendered", rendered)):
        faces = detector(image, 1)
        assert faces, f"no face found in the {name} image"
        shape = predictor(image, faces[0])
        refs.append(np.asarray(recognizer.compute_face_descriptor(image, shape), dtype=np.float32))
        chips.append(dlib.get_face_chip(image, shape, size=150, padding=0.25))
    x = torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float()
    ref = torch.from_numpy(np.stack(refs))
    with torch.no_grad():
        raw = net.descriptor_raw(x)
        normed = net(x)
        feats = net.features(x)
    cos = torch.nn.functional.cosine_similarity(raw, ref)
    assert cos.min().item() > 0.9999
    assert (raw - ref).abs().max().item() < 1e-4
    assert torch.allclose(normed, ref / ref.norm(dim=1, keepdim=True), atol=1e-5)
    assert torch.allclose(feats[-1], normed)
    shapes = [tuple(f.shape[1:]) for f in feats]
    assert shapes == [(32, 35, 35), (32, 35, 35), (64, 17, 17), (128, 8, 8), (256, 4, 4), (256, 2, 2), (128,)]


@pytest.mark.parametrize("cut", [10, 1000, 5_000_000, -7])
def test_truncated_file_raises_naming_it(tmp_path, cut):
    data = _model_path().read_bytes()
    bad = tmp_path / "truncated.dat"
    bad.write_bytes(data[:cut])
    with pytest.raises(TalkingHeadError, match="truncated.dat"):
        load_dlib_face_resnet(bad)


def test_garbage_and_trailing_bytes_raise(tmp_path):
    junk = tmp_path / "junk.dat"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(TalkingHeadError, match="junk.dat"):
        parse_dlib_face_model(junk)
    empty = tmp_path / "empty.dat"
    empty.write_bytes(b"")
    with pytest.raises(TalkingHeadError, match="empty.dat"):
        parse_dlib_face_model(empty)
    model = find_dlib_face_model()
    if model is not None and model.is_file():
        extra = tmp_path / "extra.dat"
        extra.write_bytes(model.read_bytes() + b"\x01\x00")
        with pytest.raises(TalkingHeadError, match="extra.dat.*unexpected bytes"):
            parse_dlib_face_model(extra)


def test_missing_model_warns_once_and_returns_none(monkeypatch, caplog):
    monkeypatch.setattr(face_net, "find_dlib_face_model", lambda: None)
    with caplog.at_level(logging.WARNING, logger=face_net.__name__):
        assert load_dlib_face_resnet() is None
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_explicit_missing_path_raises(tmp_path, monkeypatch):
    with pytest.raises(TalkingHeadError, match="nope.dat"):
        load_dlib_face_resnet(tmp_path / "nope.dat")
    monkeypatch.setenv(face_net.ENV_VAR, str(tmp_path / "env.dat"))
    with pytest.raises(TalkingHeadError, match="env.dat"):
        load_dlib_face_resnet()


def test_face_features_gradients_flow_and_net_is_frozen():
    torch.manual_seed(0)
    model = find_dlib_face_model()
    if model is not None and model.is_file():
        net = load_dlib_face_resnet(model)
    else:  # the gradient path does not depend on the weights
        net = DlibFaceResNet().eval().requires_grad_(False)
    ff = FaceFeatures(net)
    ff.train()
    assert not ff.net.training
    assert all(not p.requires_grad for p in ff.parameters())
    x = (torch.rand(2, 3, 256, 256) * 2 - 1).requires_grad_(True)
    feats = ff(x)
    assert len(feats) == len(face_net.FEATURE_NAMES)
    assert ff.chips(x).shape == (2, 3, 150, 150)
    loss = sum(f.abs().mean() for f in feats)
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # Only the central crop_fraction of the image is seen.
    assert x.grad[:, :, :10].abs().sum() == 0 and x.grad[:, :, 128].abs().sum() > 0
    assert all(p.grad is None for p in ff.parameters())
