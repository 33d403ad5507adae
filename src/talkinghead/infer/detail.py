"""Rendering at the resolution the user sees, above the network's trained size: two layers.

The network renders at its trained size S from its guide at S (the shots it fuses, warped, as it
was trained); the fine detail comes from the nearest shot warped at output resolution O
(``guide_hi``), added where the network trusts the guide, as in *Fast Bi-layer Neural Synthesis
of One-Shot Realistic Head Avatars* (Zakharov et al., ECCV 2020):

    out = up(out_lo) + up(α) · (guide_hi − up(down(guide_hi)))

``up``/``down`` resample between S and O (bilinear, antialiased when shrinking). α is the
warp-guided generator's own blend weight of the warped shot (how much it trusts the guide at
each pixel); a generator without one (the paper's G) gets α from how well its image agrees
with its guide (:func:`agreement_alpha`). With α = 1 and no correction the output is the
high-resolution guide: the network's guide at S enlarged, plus ``guide_hi``'s detail (with one
shot, ``guide_hi`` itself up to resampling); with α = 0 it is the network's image, upsampled.
Only the nearest shot gives detail: averaging several, whose fine detail never lines up
exactly, would cancel it.

The output-resolution warp is cheap: its dense map is computed on a coarse grid
(``detail.map_resolution``), upsampled, and the shots are sampled once at full size
(:func:`~talkinghead.data.warp.warp_image`).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from talkinghead.config import DetailConfig, MouthConfig
from talkinghead.models.guide import WarpGuide
from talkinghead.errors import TalkingHeadError


def default_output_size(face_side: float | None, network_size: int, max_size: int) -> int:
    """The output size when none is asked for: the source face's own resolution (its crop
    square's side in source pixels, rounded down to an even number, as video encoders want),
    capped at ``max_size``, never below the network's size."""
    if face_side is None or not face_side > 0:
        return network_size
    even = 2 * int(float(face_side) // 2)
    return int(min(max(max_size, network_size), max(network_size, even)))


def check_output_size(size, max_size: int) -> int:
    """``size`` as a positive whole number of pixels up to ``max_size``; TalkingHeadError otherwise."""
    import numbers

    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise TalkingHeadError(f"size {size!r}: must be a positive whole number of pixels")
    if size > max_size:
        raise TalkingHeadError(f"size {size}: at most {max_size} px")
    return int(size)


@functools.lru_cache(maxsize=16)
def shrink_matrix(size_in: int, size_out: int) -> Tensor:
    """(size_out, size_in): antialiased bilinear resampling of one axis (torch's
    ``interpolate(..., antialias=True)``) as a matrix, so that shrinking is two matmuls, which
    an ONNX graph can hold (the exporter has no antialiased resize)."""
    with torch.inference_mode(False), torch.no_grad():  # a plain tensor, usable in any later mode
        eye = torch.eye(size_in)[None, None]  # column j: the unit impulse at input row j
        return F.interpolate(eye, size=(size_out, size_in), mode="bilinear", align_corners=False,
                             antialias=True)[0, 0]


def resize(images: Tensor, size: int) -> Tensor:
    """(B, C, H, H) → (B, C, size, size): bilinear, pixel centres aligned, antialiased when shrinking."""
    if images.shape[-1] == size:
        return images
    if size > images.shape[-1]:
        b, c, h, w = images.shape  # one channel at a time: torch's CPU kernel is several times faster so
        flat = F.interpolate(images.reshape(b * c, 1, h, w), size=(size, size), mode="bilinear", align_corners=False)
        return flat.reshape(b, c, size, size)
    matrix = shrink_matrix(int(images.shape[-1]), int(size)).to(images)  # int: a traced shape is a tensor
    return matrix @ images @ matrix.T


def resample_shots(shots: Tensor, size: int) -> Tensor:
    """(K, 3, H, H) in [-1, 1] → (K, 3, O, O): Lanczos (area averaging when shrinking by more
    than 2), which keeps the fine detail that bilinear resampling by a factor near 1 blurs."""
    import cv2
    import numpy as np

    if shots.shape[-1] == size:
        return shots
    interpolation = cv2.INTER_AREA if size <= shots.shape[-1] / 2 else cv2.INTER_LANCZOS4
    with torch.inference_mode(False), torch.no_grad():
        images = shots.detach().float().cpu().permute(0, 2, 3, 1).numpy()
        out = np.stack([cv2.resize(np.ascontiguousarray(i), (size, size), interpolation=interpolation) for i in images])
        return torch.from_numpy(out).permute(0, 3, 1, 2).clamp(-1, 1).to(shots).contiguous()


def compose_detail(out_lo: Tensor, alpha: Tensor, guide_hi: Tensor, guide_lo: Tensor) -> Tensor:
    """The two layers: ``up(out_lo) + up(α)·(guide_hi − up(guide_lo))``, clamped to [-1, 1]
    (computed as ``up(out_lo − α·guide_lo) + up(α)·guide_hi``: one enlargement fewer).

    Args:
        out_lo: (B, 3, S, S) the network's image. alpha: (B, 1, S, S) in [0, 1].
        guide_hi: (B, 3, O, O) the guide at output resolution. guide_lo: (B, 3, S, S) the guide
            the network saw (``down(guide_hi)``).
    Returns:
        (B, 3, O, O).
    """
    size = guide_hi.shape[-1]
    # = up(out_lo) + up(α)·(guide_hi − up(guide_lo)) with the two enlargements of 3-channel
    # images folded into one (exact where α is constant over a pixel's neighbourhood, e.g. 0 or 1).
    out = resize(out_lo - alpha * guide_lo, size)  # a new tensor, whatever the size
    return out.addcmul_(resize(alpha, size), guide_hi).clamp_(-1, 1)  # in place: 512-px images are large


def agreement_alpha(out_lo: Tensor, guide_lo: Tensor, temperature: float) -> Tensor:
    """(B, 1, S, S) in (0, 1]: exp(−|out − guide| / temperature), the colour channels' mean
    absolute difference smoothed over 3×3 pixels (α for a G without a blend weight)."""
    diff = (out_lo - guide_lo).abs().mean(dim=1, keepdim=True)
    diff = F.avg_pool2d(diff, 3, stride=1, padding=1, count_include_pad=False)
    return torch.exp(-diff / temperature)


#: The detail layer's warps: colours only, no trust mask inside the mouth (see DetailRenderer.guide).
NO_MOUTH_DISTRUST = MouthConfig(guide_distrust=False)


class DetailRenderer(nn.Module):
    """An avatar rendered at any output size (see the module docstring).

    ``forward(sketches (B, 3, S, S), landmarks (B, 68, 2) in S-px crop coordinates, size O)``
    → (B, 3, O, O) in [-1, 1]. The shots travel inside at the network's size S and at their high
    resolution H; they are resampled to O once per size asked for (:meth:`shots_at`).
    """

    def __init__(self, generator: nn.Module, psi: Tensor, shots: Tensor, shots_hi: Tensor, shot_landmarks: Tensor,
                 shot_penalty: Tensor | None, config: DetailConfig, guide: WarpGuide | None = None):
        super().__init__()
        self.generator = generator
        self.network_size = int(shots.shape[-1])
        self.config = config
        # The guide G reads (fusing its shots), or the classical warp's for the paper's G, whose
        # output the detail is added to where it agrees with that warp.
        self.builder = guide or WarpGuide.for_generator(generator) or WarpGuide()
        self.guided = bool(generator.warp_guidance)
        self.fuse = self.builder.fuse
        self.register_buffer("psi", psi.reshape(-1))
        self.register_buffer("shots", shots)  # (K, 3, S, S) in [-1, 1], the network's own crops
        self.register_buffer("shots_hi", shots_hi)  # (K, 3, H, H) in [-1, 1]
        self.register_buffer("shot_landmarks", shot_landmarks.float())  # (K, 68, 2), S-px
        penalty = torch.zeros(len(shots_hi)) if shot_penalty is None else shot_penalty.float()
        self.register_buffer("shot_penalty", penalty.reshape(len(shots_hi)).to(shots_hi.device))
        self._resampled: dict[int, Tensor] = {}  # output size → (K, 3, O, O) shots

    def shots_at(self, size: int) -> Tensor:
        """(K, 3, O, O): the shots resampled to the output size (kept for the next call); at the
        network's size, its own crops (what the guide was at that size before this layer)."""
        if size == self.network_size:
            return self.shots
        if size not in self._resampled:
            self._resampled[size] = resample_shots(self.shots_hi, size)
        return self._resampled[size]

    def guide(self, landmarks: Tensor, size: int, shot_bias: Tensor | None = None, fuse: int | None = None,
              penalty: bool = True, trust: bool = True) -> Tensor:
        """(B, 4, O, O): the ``fuse`` (default: G's) nearest shots warped onto ``landmarks``
        (B, 68, 2, S-px) at size O, and the trust mask (:class:`~talkinghead.models.guide.WarpGuide`).
        ``penalty=False``: shots ranked by landmark distance alone (the classical warp).
        ``trust=False``: the trust mask without the mouth's distrust (which only G reads, and
        which costs more than the warp at 512 px); the colours of one shot are the same."""
        b = landmarks.shape[0]
        scale = size / self.network_size
        extra = self.shot_penalty[None].expand(b, -1) if penalty else torch.zeros_like(self.shot_penalty)[None].expand(b, -1)
        if shot_bias is not None:
            extra = extra + shot_bias.to(extra)
        shots = self.shots_at(size)
        map_resolution = None if size == self.network_size else max(self.config.map_resolution,
                                                                     self.network_size // 2)
        return self.builder(shots[None].expand(b, -1, -1, -1, -1),
                            (self.shot_landmarks * scale)[None].expand(b, -1, -1, -1),
                            landmarks.float() * scale, fuse=self.fuse if fuse is None else fuse, penalty=extra,
                            map_resolution=map_resolution, mouth=None if trust else NO_MOUTH_DISTRUST)

    def classical_warp(self, landmarks: Tensor, size: int) -> Tensor:
        """(B, 3, O, O): the classical warp at output size, the baseline: the nearest shot (by
        landmark distance alone) warped onto ``landmarks`` (B, 68, 2, S-px)."""
        return self.guide(landmarks, size, fuse=1, penalty=False, trust=False)[:, :3]

    def forward(self, sketches: Tensor, landmarks: Tensor, size: int, shot_bias: Tensor | None = None) -> Tensor:
        b = sketches.shape[0]
        # The network's layer: its own guide at its own size, as it was trained.
        guide_lo = self.guide(landmarks, self.network_size, shot_bias)
        psi = self.psi.expand(b, -1)
        if self.guided:
            out_lo, alpha = self.generator(sketches, psi, guide_lo, return_alpha=True)
        else:
            out_lo = self.generator(sketches, psi)
            alpha = agreement_alpha(out_lo, guide_lo[:, :3], self.config.agreement_temperature)
        if size <= self.network_size:  # smaller outputs: the network's image, shrunk
            return resize(out_lo, size)
        # The detail layer: the nearest shot warped at output size (averaging several shots,
        # whose fine detail never lines up exactly, would cancel the detail it is there for).
        nearest = self.guide(landmarks, size, shot_bias, fuse=1, trust=False)[:, :3].to(out_lo)
        return compose_detail(out_lo, alpha.to(out_lo), nearest, resize(nearest, self.network_size))


class FixedSizeRenderer(nn.Module):
    """A :class:`DetailRenderer` at one output size, with :class:`~talkinghead.infer.avatar.
    AvatarRenderer`'s interface: ``forward(sketches (B, 3, S, S), landmarks (B, 68, 2), shot_bias
    (B, K) or None)`` → (B, 3, O, O); for ONNX export and live rendering."""

    def __init__(self, renderer: DetailRenderer, size: int):
        super().__init__()
        self.renderer, self.size = renderer, int(size)
        if self.size > renderer.network_size:  # made now, not while traced (an export holds them as constants)
            renderer.shots_at(self.size)
            shrink_matrix(self.size, renderer.network_size)

    def forward(self, sketches: Tensor, landmarks: Tensor, shot_bias: Tensor | None = None) -> Tensor:
        return self.renderer(sketches, landmarks, self.size, shot_bias)
