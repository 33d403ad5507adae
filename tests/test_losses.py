"""Losses: torchvision-compatible VGG19, weight discovery, content loss and its fallbacks,
hinge / feature-matching / embedding-match values."""

from __future__ import annotations

import logging
import pickle

import pytest
import torch
from torch import nn

from talkinghead.config import LossConfig
from talkinghead.errors import TalkingHeadError
from talkinghead.losses import (
    ContentLoss,
    VGG19Features,
    embedding_match_loss,
    feature_matching_loss,
    hinge_d_loss,
    hinge_g_loss,
    load_vgg19,
)
from talkinghead.losses.vgg import TORCHVISION_FILE

#: Indices of the 16 convolutions in torchvision's ``vgg19().features``.
TORCHVISION_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)


@pytest.fixture
def no_vgg_env(monkeypatch, tmp_path):
    monkeypatch.delenv("TALKINGHEAD_VGG19", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path


def _torchvision_file(path, seed=0):
    """Write a file shaped like torchvision's vgg19 checkpoint (features.* and classifier.*)."""
    torch.manual_seed(seed)
    state = VGG19Features().state_dict()
    state["classifier.0.weight"] = torch.zeros(2, 2)  # ignored on load
    torch.save(state, path)
    return state


def test_state_dict_keys_match_torchvision():
    keys = list(VGG19Features().state_dict())
    expected = [f"features.{i}.{p}" for i in TORCHVISION_CONV_INDICES for p in ("weight", "bias")]
    assert keys == expected
    assert keys[0] == "features.0.weight" and keys[-1] == "features.34.bias"


def test_feature_layers_are_conv_n_1_relus():
    vgg = VGG19Features().eval()
    feats = vgg(torch.rand(1, 3, 64, 64) * 2 - 1)
    assert [tuple(f.shape[1:]) for f in feats] == [
        (64, 64, 64), (128, 32, 32), (256, 16, 16), (512, 8, 8), (512, 4, 4)
    ]
    assert all((f >= 0).all() for f in feats)  # taken after ReLU
    assert vgg.layers == (1, 6, 11, 20, 29)


def test_load_from_explicit_path_env_and_hub_cache(no_vgg_env, monkeypatch):
    tmp = no_vgg_env
    state = _torchvision_file(tmp / "weights.pth")
    vgg = load_vgg19(str(tmp / "weights.pth"))
    assert isinstance(vgg, VGG19Features) and not vgg.training
    assert all(not p.requires_grad for p in vgg.parameters())
    assert torch.equal(vgg.features[34].bias, state["features.34.bias"])

    monkeypatch.setenv("TALKINGHEAD_VGG19", str(tmp / "weights.pth"))
    assert torch.equal(load_vgg19().features[0].weight, state["features.0.weight"])
    monkeypatch.delenv("TALKINGHEAD_VGG19")

    hub = tmp / "torch_home" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    state = _torchvision_file(hub / TORCHVISION_FILE, seed=1)
    assert torch.equal(load_vgg19().features[10].weight, state["features.10.weight"])


def test_load_safetensors(tmp_path):
    from safetensors.torch import save_file

    state = VGG19Features().state_dict()
    save_file(state, str(tmp_path / "vgg.safetensors"))
    assert torch.equal(load_vgg19(str(tmp_path / "vgg.safetensors")).features[2].weight,
                       state["features.2.weight"])


def test_missing_weights_return_none_with_one_warning(no_vgg_env, caplog):
    with caplog.at_level(logging.WARNING):
        assert load_vgg19() is None
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "pixel L1" in warnings[0].getMessage()


def test_explicit_missing_or_bad_files_are_errors(no_vgg_env, monkeypatch):
    tmp = no_vgg_env
    with pytest.raises(TalkingHeadError, match="not found"):
        load_vgg19(str(tmp / "nope.pth"))
    monkeypatch.setenv("TALKINGHEAD_VGG19", str(tmp / "nope.pth"))
    with pytest.raises(TalkingHeadError, match="TALKINGHEAD_VGG19"):
        load_vgg19()
    monkeypatch.delenv("TALKINGHEAD_VGG19")
    torch.save({"features.0.weight": torch.zeros(3)}, tmp / "wrong.pth")
    with pytest.raises(TalkingHeadError, match="not torchvision VGG19"):
        load_vgg19(str(tmp / "wrong.pth"))
    # Arbitrary pickled objects are refused (weights_only), not executed.
    with open(tmp / "evil.pth", "wb") as f:
        pickle.dump({"features.0.weight": LossConfig()}, f, protocol=2)
    with pytest.raises(TalkingHeadError, match="not a readable"):
        load_vgg19(str(tmp / "evil.pth"))


class _ToyFaceNet(nn.Module):
    """Stand-in face network: returns two feature maps, has parameters and a BatchNorm."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        h = self.bn(self.conv(x))
        return [h, h.mean(dim=(2, 3))]


def test_content_loss_pixel_fallback_and_face_term():
    cfg = LossConfig()
    fake = torch.zeros(2, 3, 16, 16, requires_grad=True)
    real = torch.full((2, 3, 16, 16), 0.5)
    loss = ContentLoss(None, None, cfg)
    terms = loss(fake, real)
    assert set(terms) == {"pixel", "total"}
    assert terms["pixel"].item() == pytest.approx(0.5)
    assert terms["total"].item() == pytest.approx(cfg.pixel_fallback * 0.5)

    face = _ToyFaceNet()
    loss = ContentLoss(None, face, cfg).train()
    assert not face.training and all(not p.requires_grad for p in face.parameters())
    terms = loss(fake, real)
    assert set(terms) == {"pixel", "face", "total"}
    assert terms["face"] > 0
    assert terms["total"].item() == pytest.approx(
        cfg.pixel_fallback * terms["pixel"].item() + cfg.face * terms["face"].item(), rel=1e-6)
    terms["total"].backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert all(p.grad is None for p in face.parameters())


def test_content_loss_with_vgg():
    torch.manual_seed(0)
    vgg = VGG19Features()  # random weights: enough to test the plumbing, never used in training
    loss = ContentLoss(vgg, None, LossConfig())
    real = torch.rand(1, 3, 32, 32) * 2 - 1
    same = loss(real.clone(), real)
    assert set(same) == {"vgg19", "total"} and same["total"].item() == 0.0
    fake = (real + 0.3 * torch.randn_like(real)).requires_grad_(True)
    terms = loss(fake, real)
    assert terms["vgg19"] > 0
    assert terms["total"].item() == pytest.approx(LossConfig().vgg19 * terms["vgg19"].item())
    terms["total"].backward()
    assert fake.grad.abs().sum() > 0 and all(p.grad is None for p in vgg.parameters())


def test_hinge_losses_known_values():
    real = torch.tensor([2.0, 0.5, -1.0])  # relu(1 - r) = 0, 0.5, 2  -> mean 2.5/3
    fake = torch.tensor([-2.0, 0.0, 1.0])  # relu(1 + f) = 0, 1, 2    -> mean 1
    assert hinge_d_loss(real, fake).item() == pytest.approx(2.5 / 3 + 1.0)
    assert hinge_g_loss(fake).item() == pytest.approx(1.0 / 3 * -(-2.0 + 0.0 + 1.0))
    assert hinge_d_loss(torch.ones(4), -torch.ones(4)).item() == 0.0


def test_feature_matching_and_embedding_match():
    real = [torch.zeros(2, 3, 4, 4, requires_grad=True), torch.ones(2, 5, requires_grad=True)]
    fake = [torch.full((2, 3, 4, 4), 0.5, requires_grad=True), torch.full((2, 5), 3.0, requires_grad=True)]
    fm = feature_matching_loss(real, fake)
    assert fm.item() == pytest.approx(0.5 + 2.0)
    fm.backward()
    assert all(r.grad is None for r in real)  # real side detached
    assert all(f.grad is not None for f in fake)
    with pytest.raises(ValueError):
        feature_matching_loss(real, fake[:1])

    w = torch.tensor([[1.0, -1.0], [0.0, 2.0]])
    e = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    assert embedding_match_loss(w, e).item() == pytest.approx(1.0)
