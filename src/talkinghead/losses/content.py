"""Content loss L_CNT (paper, sec. 3.2).

    L_CNT = λ_vgg19 · Σ_l ‖VGG19_l(x̂) − VGG19_l(x)‖₁  +  λ_face · Σ_l ‖Face_l(x̂) − Face_l(x)‖₁

with ‖·‖₁ the mean absolute difference per layer. The paper's face network is VGGFace;
here it is whatever ``face_net`` is given (dlib's face-recognition ResNet in this project).

Fallbacks, so that training works offline without pretrained weights:

* ``vgg is None`` → the VGG19 term is replaced by ``λ_pixel_fallback · ‖x̂ − x‖₁`` on pixels.
  Pixel L1 gives blurrier results than a perceptual loss but is a sound reconstruction term.
* ``face_net is None`` → the face term is left out.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

from talkinghead.config import LossConfig
from talkinghead.errors import TalkingHeadError
from talkinghead.losses.vgg import VGG19Features, load_vgg19

log = logging.getLogger(__name__)


def layerwise_l1(fake_feats: list[Tensor], real_feats: list[Tensor]) -> Tensor:
    """Σ_l mean |fake_l − real_l|, in fp32."""
    if len(fake_feats) != len(real_feats) or not fake_feats:
        raise ValueError(f"feature lists differ in length ({len(fake_feats)} vs {len(real_feats)}) or are empty")
    return sum((f.float() - r.float()).abs().mean() for f, r in zip(fake_feats, real_feats))


class ContentLoss(nn.Module):
    """``forward(fake, real)`` with fake, real: (B, 3, H, W) in [-1, 1].

    Returns a dict of fp32 scalars: the unweighted terms that are on (``"vgg19"`` or
    ``"pixel"``, and ``"face"``) and ``"total"``, the weighted sum that is minimised.
    The feature networks are frozen and stay in eval mode even when this module is
    switched to train mode.
    """

    def __init__(self, vgg: VGG19Features | None, face_net: nn.Module | None, cfg: LossConfig):
        super().__init__()
        self.cfg = cfg
        self.vgg = _frozen(vgg)
        self.face_net = _frozen(face_net)

    def train(self, mode: bool = True) -> "ContentLoss":
        super().train(mode)
        for net in (self.vgg, self.face_net):
            if net is not None:
                net.eval()
        return self

    def _features_l1(self, net: nn.Module, fake: Tensor, real: Tensor) -> Tensor:
        real_feats = [f.detach() for f in net(real.detach())]
        return layerwise_l1(net(fake), real_feats)

    def forward(self, fake: Tensor, real: Tensor) -> dict[str, Tensor]:
        terms: dict[str, Tensor] = {}
        if self.vgg is not None:
            terms["vgg19"] = self._features_l1(self.vgg, fake, real)
            total = self.cfg.vgg19 * terms["vgg19"]
        else:
            terms["pixel"] = (fake.float() - real.float().detach()).abs().mean()
            total = self.cfg.pixel_fallback * terms["pixel"]
        if self.face_net is not None and self.cfg.face > 0:
            terms["face"] = self._features_l1(self.face_net, fake, real)
            total = total + self.cfg.face * terms["face"]
        terms["total"] = total
        return terms


def _frozen(net: nn.Module | None) -> nn.Module | None:
    if net is None:
        return None
    return net.eval().requires_grad_(False)


def build_content_loss(cfg: LossConfig, device: torch.device | str = "cpu",
                       require_vgg19: bool = False, warn: bool = True) -> ContentLoss:
    """L_CNT with whatever pretrained feature networks exist offline: VGG19 (torchvision
    weights or a local file; else a pixel-L1 fallback) and dlib's face ResNet (else skipped).
    ``require_vgg19``: missing VGG19 weights are an error instead of the pixel-L1 fallback;
    ``warn``: the fallback is logged as a warning (else at info level, see :func:`load_vgg19`)."""
    from talkinghead.losses.vgg import ENV_VAR, TORCHVISION_FILE

    vgg = load_vgg19(warn=warn)
    if vgg is None and require_vgg19:
        raise TalkingHeadError(
            f"VGG19 weights not found: set ${ENV_VAR} to torchvision's {TORCHVISION_FILE} (or put it in "
            f"{torch.hub.get_dir()}/checkpoints/); --allow-pixel-loss trains with the pixel-L1 stand-in instead"
        )
    face = None
    if cfg.face > 0:
        try:
            from talkinghead.losses.face_net import FaceFeatures, load_dlib_face_resnet

            net = load_dlib_face_resnet()
            face = FaceFeatures(net) if net is not None else None
        except ImportError:
            log.warning("face-feature network unavailable; the face term of the content loss is off")
    return ContentLoss(vgg, face, cfg).to(device)
