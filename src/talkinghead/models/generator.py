"""The generator G(y, ê; ψ, P): renders a landmark sketch as the person described by ê.

Paper, sec. 3.1 and supplementary: an image-to-image network (Johnson et al. 2016) on the
sketch — residual downsampling blocks with instance norm, residual blocks at the
bottleneck, residual upsampling blocks — in which every normalisation layer after the
encoder is adaptive instance norm whose scales and biases are the person-specific
parameters ψ̂ = P ê. P is a learned matrix shared by all people.

Layer widths at resolution level l (size S / 2**l)::

    level:  0      1      2        3        ...   n = gen_downsamples
    width:  base   base   2·base   4·base   ...   (capped at max_channels)

so the wide layers live at low resolution and full resolution stays at ``base`` channels.

With ``model.warp_guidance`` (not in the paper) G also takes a *guide*: the nearest shot
warped onto the target landmarks and its trust mask (:class:`talkinghead.models.guide.WarpGuide`),
concatenated with the sketch at the input, and its output layer adds a blend logit:
``out = α·warped + (1 − α)·synthesised`` with ``α = sigmoid(logit + GUIDE_BLEND_BIAS)``;
with ``model.warp_correction`` a bounded correction Δ is added to the warped shot first. The
bias makes a fresh G start close to the warp, so meta-learning begins at the classical warp's
quality and learns where to replace it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from talkinghead.config import ModelConfig
from talkinghead.models.blocks import (
    AdaIN,
    ResBlockAdaIN,
    ResBlockDown,
    ResBlockUp,
    SelfAttention,
    conv3x3,
    sn,
)

#: Std of P's initial entries in units of 1/sqrt(N). ψ = P ê then has std ≈ this × rms(ê), so
#: initial AdaIN scales (1 + ψ_scale) stay near 1 and biases near 0 for embeddings of order 1.
PROJECTION_INIT_GAIN = 0.1
#: Offset of the warp-guided G's blend logit: α ≈ 0.88 for a fresh G (mostly the warped shot).
GUIDE_BLEND_BIAS = 2.0
#: Largest correction (model.warp_correction) added to the warped shot, in [-1, 1] image units.
CORRECTION_SCALE = 0.5
#: Channels of the guide: warped shot (3) and trust mask (1).
GUIDE_CHANNELS = 4


def generator_widths(cfg: ModelConfig) -> list[int]:
    """Channels at levels 0..gen_downsamples (see the module docstring)."""
    widths = [min(cfg.base_channels * 2 ** max(level - 1, 0), cfg.max_channels)
              for level in range(cfg.gen_downsamples + 1)]
    return widths


class Generator(nn.Module):
    """Sketch (B, 3, S, S) + psi (B, psi_size) -> image (B, 3, S, S) in [-1, 1].

    psi layout — a fixed order that fine-tuning and saved avatars rely on: the AdaIN layers
    in forward order (bottleneck blocks, then upsampling blocks, then the output norm), and
    for each layer its C scales followed by its C biases. A layer's effective scale is
    ``1 + psi_scale``, so psi = 0 means plain instance norm. ``psi_slices()`` lists the order.
    """

    psi_size: int
    projection: nn.Module

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        spectral = cfg.spectral_norm
        attention = set(cfg.attention_sizes)  # encoder (paper: 32×32)
        decoder_attention = set(cfg.decoder_attention_sizes)  # decoder (paper: 64×64)
        widths = generator_widths(cfg)
        n = cfg.gen_downsamples

        self.warp_guidance = cfg.warp_guidance
        self.warp_correction = cfg.warp_guidance and cfg.warp_correction
        #: How many nearest shots the guide fuses (:class:`talkinghead.models.guide.WarpGuide`).
        self.warp_shots = cfg.warp_shots
        # Encoder: level l-1 -> l, affine (non-adaptive) instance norm.
        down: list[nn.Module] = []
        size, cin = cfg.image_size, 3 + (GUIDE_CHANNELS if cfg.warp_guidance else 0)
        for level in range(1, n + 1):
            size //= 2
            layers: list[nn.Module] = [ResBlockDown(cin, widths[level], spectral, norm=True, first=level == 1)]
            if size in attention:
                layers.append(SelfAttention(widths[level], spectral))
            down.append(nn.Sequential(*layers))
            cin = widths[level]
        self.down = nn.ModuleList(down)

        # Bottleneck and decoder: all norms adaptive.
        self.res = nn.ModuleList(ResBlockAdaIN(widths[n], spectral) for _ in range(cfg.gen_res_blocks))
        self.up = nn.ModuleList()
        self.up_attention = nn.ModuleDict()
        for i, level in enumerate(range(n, 0, -1)):
            size *= 2
            self.up.append(ResBlockUp(widths[level], widths[level - 1], spectral))
            if size in decoder_attention:
                self.up_attention[str(i)] = SelfAttention(widths[level - 1], spectral)
        self.out_norm = AdaIN(widths[0])
        out_channels = 3 + (1 if cfg.warp_guidance else 0) + (3 if self.warp_correction else 0)
        self.out_conv = conv3x3(widths[0], out_channels, spectral)

        #: psi entries consumed by each adaptive block, in forward order.
        self.psi_sizes = [m.psi_size for m in self._adaptive_blocks()]
        self.psi_size = sum(self.psi_sizes)
        self.embed_dim = cfg.embed_dim
        # P: the paper's learned matrix, spectrally normalised like every layer of the paper's
        # G (``model.projection_spectral_norm``). Without it, small initial entries keep the
        # initial AdaIN scales near 1.
        self.projection = nn.Linear(cfg.embed_dim, self.psi_size, bias=False)
        nn.init.normal_(self.projection.weight, std=PROJECTION_INIT_GAIN / cfg.embed_dim**0.5)
        sn(self.projection, cfg.projection_spectral_norm)

    def _adaptive_blocks(self) -> list[nn.Module]:
        return [*self.res, *self.up, self.out_norm]

    def psi_slices(self) -> list[tuple[str, int, int]]:
        """(layer name, start, end) of each AdaIN layer's span in psi, in order."""
        names = {id(m): name for name, m in self.named_modules()}
        out, start = [], 0
        for block in self._adaptive_blocks():
            norms = [block] if isinstance(block, AdaIN) else [block.norm1, block.norm2]
            for norm in norms:
                out.append((names[id(norm)], start, start + norm.psi_size))
                start += norm.psi_size
        return out

    def psi_from_embedding(self, embedding: Tensor) -> Tensor:
        """ψ̂ = P ê: (B, N) -> (B, psi_size)."""
        return self.projection(embedding)

    def forward(self, sketch: Tensor, psi: Tensor, guide: Tensor | None = None,
                return_alpha: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """sketch: (B, 3, S, S) in [-1, 1]; psi: (B, psi_size) or (psi_size,); guide (warp-guided G
        only): (B, 4, S, S), the warped shot in [-1, 1] and its trust mask in [0, 1] → (B, 3, S, S).
        ``return_alpha`` (warp-guided G only): also return the blend weight α (B, 1, S, S) of the
        (corrected) warped shot, how much G trusts the guide at each pixel."""
        b = sketch.shape[0]
        if psi.shape[-1] != self.psi_size or psi.dim() not in (1, 2):
            raise ValueError(f"psi must be (B, {self.psi_size}) or ({self.psi_size},); got {tuple(psi.shape)}")
        if self.warp_guidance != (guide is not None):
            raise ValueError("a warp-guided G needs a guide (B, 4, S, S); the paper's G takes none")
        psi = psi.expand(b, -1) if psi.dim() == 1 else psi
        chunks = iter(psi.split(self.psi_sizes, dim=1))

        x = sketch if guide is None else torch.cat([sketch, guide.to(sketch.dtype)], dim=1)
        for stage in self.down:
            x = stage(x)
        for block in self.res:
            x = block(x, next(chunks))
        for i, block in enumerate(self.up):
            x = block(x, next(chunks))
            if str(i) in self.up_attention:
                x = self.up_attention[str(i)](x)
        x = self.out_conv(F.relu(self.out_norm(x, next(chunks))))
        if guide is None:
            if return_alpha:
                raise ValueError("return_alpha needs a warp-guided G (the paper's G has no blend weight)")
            return torch.tanh(x)
        alpha = torch.sigmoid(x[:, 3:4] + GUIDE_BLEND_BIAS)  # (B, 1, S, S)
        warped = guide[:, :3].to(x.dtype)
        if self.warp_correction:  # Δ keeps a gradient where α saturates at 1
            warped = (warped + CORRECTION_SCALE * torch.tanh(x[:, 4:7])).clamp(-1, 1)
        out = alpha * warped + (1 - alpha) * torch.tanh(x[:, :3])
        return (out, alpha) if return_alpha else out
