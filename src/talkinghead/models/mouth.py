"""A small mouth generator: the inside of an open mouth, learned (not in the paper).

It works on mouth crops in a canonical frame (:func:`talkinghead.data.mouth.mouth_crop_matrix`:
the mouth level, centred, the same width in every crop) and fills the target's inner-lip
polygon, given

* the target's crop with that polygon blanked out (the lips, chin and lighting around it),
* the polygon as a soft mask,
* one of the person's shots, cut the same way, with its own inner-lip mask (its colours; its
  teeth where it shows them).

It is a U-Net with three downsamplings, small enough to train in a few CPU hours on the shared
clips' mouths (``talkinghead train-mouth``) and to run in a few milliseconds per frame. Only the
polygon's inside of its output is used: the caller composites it (:meth:`MouthGenerator.fill`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from talkinghead.config import MouthNetConfig


#: Input channels: blanked target (3) + target mask (1) + shot (3) + shot mask (1).
IN_CHANNELS = 8


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.LeakyReLU(0.2, inplace=True))


class MouthGenerator(nn.Module):
    """(B, 8, S, S) → (B, 3, S, S) in [−1, 1]; see the module docstring for the channels.

    One convolution at full resolution each way (most of the cost is there), strided
    convolutions down, two convolutions per lower level, bilinear upsampling with skips."""

    def __init__(self, config: MouthNetConfig | None = None):
        super().__init__()
        self.config = config or MouthNetConfig()
        ch = list(self.config.channels)
        if self.config.size % (2 ** (len(ch) - 1)):
            raise ValueError(f"mouth crop size {self.config.size} is not divisible by {2 ** (len(ch) - 1)}")
        self.stem = _conv(IN_CHANNELS, ch[0])
        self.down = nn.ModuleList([nn.Sequential(_conv(a, b, stride=2), _conv(b, b)) for a, b in zip(ch, ch[1:])])
        self.up = nn.ModuleList([nn.Sequential(_conv(b + a, a), *([_conv(a, a)] if i else []))
                                 for i, (a, b) in enumerate(zip(ch, ch[1:]))][::-1])
        self.to_rgb = nn.Conv2d(ch[0], 3, 3, padding=1)

    @staticmethod
    def inputs(target: Tensor, target_mask: Tensor, shot: Tensor, shot_mask: Tensor) -> Tensor:
        """(B, 3, S, S) target crops and shot crops in [−1, 1], (B, 1, S, S) their inner-lip
        masks in [0, 1] → (B, 8, S, S) network input, the target's mouth blanked out."""
        return torch.cat([target * (1 - target_mask), target_mask, shot, shot_mask], 1)

    def forward(self, x: Tensor) -> Tensor:
        skips = [self.stem(x)]
        for block in self.down:
            skips.append(block(skips[-1]))
        x = skips.pop()
        for block, skip in zip(self.up, reversed(skips)):
            x = block(torch.cat([F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False), skip], 1))
        return torch.tanh(self.to_rgb(x))

    def fill(self, target: Tensor, target_mask: Tensor, shot: Tensor, shot_mask: Tensor) -> Tensor:
        """(B, 3, S, S) target crops with the inside of their masks generated (outside kept)."""
        out = self(self.inputs(target, target_mask, shot, shot_mask))
        return target * (1 - target_mask) + out * target_mask


class MouthCritic(nn.Module):
    """Patch critic for adversarial fine-tuning of the generator (``train-mouth --adversarial``):
    (B, 3, S, S) crop + (B, 1, S, S) mask → (B, 1, S/8, S/8) hinge scores. It sees the mask so
    that it judges the filled inside against its surroundings, not the surroundings alone."""

    def __init__(self, channels: tuple[int, ...] = (32, 64, 128)):
        super().__init__()
        layers, cin = [], 4
        for cout in channels:
            layers += [nn.utils.spectral_norm(nn.Conv2d(cin, cout, 4, stride=2, padding=1)), nn.LeakyReLU(0.2, inplace=True)]
            cin = cout
        layers.append(nn.utils.spectral_norm(nn.Conv2d(cin, 1, 3, padding=1)))
        self.net = nn.Sequential(*layers)

    def forward(self, crop: Tensor, mask: Tensor) -> Tensor:
        return self.net(torch.cat([crop, mask], 1))
