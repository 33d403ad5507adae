"""Building blocks shared by the embedder E, generator G and discriminator D.

BigGAN/SAGAN-style residual blocks (Brock et al. 2019; Zhang et al. 2019), as used by
Zakharov et al. (2019, sec. 3 and supplementary):

* :class:`ResBlockDown` — ``[norm-]ReLU-conv3x3-[norm-]ReLU-conv3x3-avgpool`` with a
  ``conv1x1-avgpool`` shortcut (E, D and G's encoder).
* :class:`ResBlockUp` — ``AdaIN-ReLU-up-conv3x3-AdaIN-ReLU-conv3x3`` with an ``up-conv1x1``
  shortcut (G's decoder).
* :class:`ResBlockAdaIN` — same width, ``AdaIN-ReLU-conv3x3`` twice plus identity (G's bottleneck).
* :class:`SelfAttention` — SAGAN attention; the softmax always runs in fp32.
* :class:`DownsamplingTrunk` — the residual downsampling stack shared by E and D.

Normalisation statistics are computed in fp32 whatever the autocast dtype: instance-norm
variances of large activations overflow fp16 and lose precision in bf16.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm


def autocast_off(device_type: str):
    """A block with autocast disabled (a no-op on devices without autocast, e.g. ``meta``,
    on which benchmarks count FLOPs)."""
    if device_type in ("cuda", "cpu", "xpu", "mps"):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


class FP32SpectralNorm(_SpectralNorm):
    """torch's spectral-norm parametrization with the power iteration and σ in fp32.

    Under autocast, torch's version runs ``mv``/``vdot`` in bf16/fp16: σ gets noisy (the
    normalised weight jitters step to step) and some torch releases fail on it outright. The
    state-dict keys (``parametrizations.weight.original``, ``…0._u``, ``…0._v``) are torch's.
    """

    def forward(self, weight: Tensor) -> Tensor:
        with autocast_off(weight.device.type):
            return super().forward(weight.float()).to(weight.dtype)


def sn(module: nn.Module, enabled: bool) -> nn.Module:
    """Wrap a conv/linear in spectral normalisation (Miyato et al. 2018) when ``enabled``."""
    if enabled:
        parametrize.register_parametrization(module, "weight", FP32SpectralNorm(module.weight))
    return module


def conv3x3(cin: int, cout: int, spectral: bool) -> nn.Module:
    return sn(nn.Conv2d(cin, cout, 3, padding=1), spectral)


def conv1x1(cin: int, cout: int, spectral: bool, bias: bool = True) -> nn.Module:
    return sn(nn.Conv2d(cin, cout, 1, bias=bias), spectral)


def instance_normalize(x: Tensor, eps: float = 1e-5) -> Tensor:
    """Zero mean, unit variance per sample and channel over (H, W), computed in fp32.

    x: (B, C, H, W) of any float dtype -> (B, C, H, W) float32.
    """
    x = x.float()
    var, mean = torch.var_mean(x, dim=(2, 3), keepdim=True, unbiased=False)
    return (x - mean) * torch.rsqrt(var + eps)


class InstanceNorm(nn.Module):
    """Instance norm with a learned (non-adaptive) affine transform; G's encoder uses it."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, H, W) -> (B, C, H, W), same dtype as x."""
        y = instance_normalize(x) * self.weight[:, None, None] + self.bias[:, None, None]
        return y.to(x.dtype)


class AdaIN(nn.Module):
    """Adaptive instance norm: ``IN(x) * (1 + scale) + bias`` with (scale, bias) from psi.

    The ``1 +`` makes psi = 0 the identity-affine instance norm, so a small initial projection
    P gives initial scales close to 1 regardless of how the embedding is scaled (see
    :class:`talkinghead.models.generator.Generator`). It holds no parameters of its own.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        #: Number of psi entries this layer consumes: C scales then C biases.
        self.psi_size = 2 * channels

    def forward(self, x: Tensor, psi: Tensor) -> Tensor:
        """x: (B, C, H, W); psi: (B, 2C) laid out as [scale (C) | bias (C)] -> (B, C, H, W)."""
        scale, bias = psi.float().split(self.channels, dim=1)
        y = instance_normalize(x) * (1.0 + scale[:, :, None, None]) + bias[:, :, None, None]
        return y.to(x.dtype)


class SelfAttention(nn.Module):
    """SAGAN self-attention with BigGAN's 2x2 max-pooled keys/values (4x fewer keys).

    Query/key use C/8 channels, value C/2; the output is added back scaled by a learned
    ``gamma`` that starts at 0, so the block starts as the identity. The attention itself
    (scores and softmax) is computed in fp32 with autocast off: under fp16 the logits can
    overflow, and bf16 loses too much precision in the normaliser.
    """

    def __init__(self, channels: int, spectral: bool):
        super().__init__()
        self.qk_channels = max(channels // 8, 1)
        self.v_channels = max(channels // 2, 1)
        self.query = conv1x1(channels, self.qk_channels, spectral, bias=False)
        self.key = conv1x1(channels, self.qk_channels, spectral, bias=False)
        self.value = conv1x1(channels, self.v_channels, spectral, bias=False)
        self.out = conv1x1(self.v_channels, channels, spectral, bias=False)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, H, W) with even H, W -> (B, C, H, W)."""
        b, _, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)  # (B, HW, C/8)
        k = F.max_pool2d(self.key(x), 2).flatten(2).transpose(1, 2)  # (B, HW/4, C/8)
        v = F.max_pool2d(self.value(x), 2).flatten(2).transpose(1, 2)  # (B, HW/4, C/2)
        with autocast_off(x.device.type):
            attended = F.scaled_dot_product_attention(
                q[:, None].float(), k[:, None].float(), v[:, None].float()
            )[:, 0]  # (B, HW, C/2)
        attended = attended.transpose(1, 2).reshape(b, self.v_channels, h, w).to(x.dtype)
        return x + self.gamma.to(x.dtype) * self.out(attended)


class ResBlockDown(nn.Module):
    """Residual downsampling block: (B, Cin, H, W) -> (B, Cout, H/2, W/2).

    ``first=True`` drops the leading ReLU (and norm): the input is an image in [-1, 1] whose
    negative half a ReLU would discard (BigGAN's "optimised" first block).
    ``norm=True`` adds affine instance norm before each ReLU (G's encoder).
    """

    def __init__(self, cin: int, cout: int, spectral: bool, norm: bool = False, first: bool = False):
        super().__init__()
        self.first = first
        self.norm1 = InstanceNorm(cin) if norm and not first else nn.Identity()
        self.conv1 = conv3x3(cin, cout, spectral)
        self.norm2 = InstanceNorm(cout) if norm else nn.Identity()
        self.conv2 = conv3x3(cout, cout, spectral)
        self.skip = conv1x1(cin, cout, spectral)

    def forward(self, x: Tensor) -> Tensor:
        h = x if self.first else F.relu(self.norm1(x))
        h = self.conv2(F.relu(self.norm2(self.conv1(h))))
        return F.avg_pool2d(h, 2) + F.avg_pool2d(self.skip(x), 2)


class ResBlock(nn.Module):
    """Same-resolution residual block without normalisation (E/D's final 'extra' block)."""

    def __init__(self, channels: int, spectral: bool):
        super().__init__()
        self.conv1 = conv3x3(channels, channels, spectral)
        self.conv2 = conv3x3(channels, channels, spectral)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, H, W) -> (B, C, H, W)."""
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class ResBlockAdaIN(nn.Module):
    """Same-resolution residual block with two AdaIN layers (G's bottleneck).

    psi layout: [norm1 (2C) | norm2 (2C)].
    """

    def __init__(self, channels: int, spectral: bool):
        super().__init__()
        self.norm1 = AdaIN(channels)
        self.conv1 = conv3x3(channels, channels, spectral)
        self.norm2 = AdaIN(channels)
        self.conv2 = conv3x3(channels, channels, spectral)
        self.psi_size = self.norm1.psi_size + self.norm2.psi_size

    def forward(self, x: Tensor, psi: Tensor) -> Tensor:
        """x: (B, C, H, W); psi: (B, psi_size) -> (B, C, H, W)."""
        psi1, psi2 = psi.split([self.norm1.psi_size, self.norm2.psi_size], dim=1)
        h = self.conv1(F.relu(self.norm1(x, psi1)))
        h = self.conv2(F.relu(self.norm2(h, psi2)))
        return x + h


class ResBlockUp(nn.Module):
    """Residual upsampling block with AdaIN: (B, Cin, H, W) -> (B, Cout, 2H, 2W).

    Nearest-neighbour upsampling before the first conv (BigGAN). psi layout:
    [norm1 (2 Cin) | norm2 (2 Cout)].
    """

    def __init__(self, cin: int, cout: int, spectral: bool):
        super().__init__()
        self.norm1 = AdaIN(cin)
        self.conv1 = conv3x3(cin, cout, spectral)
        self.norm2 = AdaIN(cout)
        self.conv2 = conv3x3(cout, cout, spectral)
        self.skip = conv1x1(cin, cout, spectral)
        self.psi_size = self.norm1.psi_size + self.norm2.psi_size

    def forward(self, x: Tensor, psi: Tensor) -> Tensor:
        psi1, psi2 = psi.split([self.norm1.psi_size, self.norm2.psi_size], dim=1)
        h = F.interpolate(F.relu(self.norm1(x, psi1)), scale_factor=2.0, mode="nearest")
        h = self.conv2(F.relu(self.norm2(self.conv1(h), psi2)))
        return h + self.skip(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def trunk_channels(base: int, max_channels: int, blocks: int) -> list[int]:
    """Output widths of ``blocks`` downsampling blocks: base, 2·base, 4·base, … capped."""
    return [min(base * 2**i, max_channels) for i in range(blocks)]


class DownsamplingTrunk(nn.Module):
    """E's and D's shared body: residual downsampling blocks, self-attention, an optional extra block.

    Input (B, Cin, S, S) -> list of per-stage activations; the last is (B, C_last, S/2**n, S/2**n)
    with n = ``downsamples``. A stage is a downsampling block (followed by self-attention when
    its output size is in ``attention_sizes``); with ``extra_block`` a final same-size residual
    block follows, as in BigGAN's discriminator and the paper's D.
    """

    def __init__(self, in_channels: int, image_size: int, base: int, max_channels: int,
                 downsamples: int, attention_sizes: tuple[int, ...], spectral: bool,
                 extra_block: bool = True):
        super().__init__()
        widths = trunk_channels(base, max_channels, downsamples)
        stages: list[nn.Module] = []
        cin, size = in_channels, image_size
        for i, cout in enumerate(widths):
            size //= 2
            layers: list[nn.Module] = [ResBlockDown(cin, cout, spectral, first=i == 0)]
            if size in attention_sizes:
                layers.append(SelfAttention(cout, spectral))
            stages.append(nn.Sequential(*layers))
            cin = cout
        if extra_block:
            stages.append(ResBlock(cin, spectral))
        self.stages = nn.ModuleList(stages)
        self.out_channels = cin
        self.out_size = size

    def forward(self, x: Tensor) -> list[Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


def sum_pool(x: Tensor, relu_first: bool = False) -> Tensor:
    """Global sum pooling then ReLU (the paper), or ReLU then pooling with ``relu_first``:
    (B, C, H, W) -> (B, C) float32 (a sum of H·W unbounded activations can overflow fp16)."""
    x = x.float()
    return F.relu(x).sum(dim=(2, 3)) if relu_first else F.relu(x.sum(dim=(2, 3)))


def image_sketch_encoder(cfg, extra_block: bool) -> tuple["DownsamplingTrunk", nn.Module]:
    """The body shared by E and D: a residual downsampling trunk on concat(image, sketch)
    (6 channels) and the map from its pooled width to N (identity when they are equal)."""
    trunk = DownsamplingTrunk(
        in_channels=6, image_size=cfg.image_size, base=cfg.base_channels,
        max_channels=cfg.max_channels, downsamples=cfg.disc_downsamples,
        attention_sizes=tuple(cfg.attention_sizes), spectral=cfg.spectral_norm,
        extra_block=extra_block,
    )
    width = trunk.out_channels
    to_embedding = (nn.Identity() if width == cfg.embed_dim
                    else sn(nn.Linear(width, cfg.embed_dim), cfg.spectral_norm))
    return trunk, to_embedding
