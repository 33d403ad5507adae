"""The mouth's inside: where a warped shot cannot be trusted, and where an interior is drawn.

A shot whose lips are closer together than the target's has, between its lips, lips and teeth;
warped onto an open target they are stretched into the "horse teeth" and vertical smears of a
classical warp. :func:`guide_distrust` marks the region inside the target's inner-lip polygon,
distrusted in proportion to how far the target's opening exceeds the shot's
(:attr:`~talkinghead.config.MouthConfig.distrust_ramp` inter-ocular distances to full
distrust): zero where the openings are equal, and nothing at all for a closed target mouth.

Landmarks are iBUG 68 points; the inner lips are 60–67. All functions are batched torch (they
run in data-loader workers, in inference and in an ONNX graph) and work at any image size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from talkinghead.config import MouthConfig

#: Inner-lip polygon (left corner, upper lip left to right, right corner, lower lip right to left).
INNER_LIPS = list(range(60, 68))
#: (upper, lower) inner-lip point pairs, left to right.
INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))


def interocular(landmarks: Tensor) -> Tensor:
    """(..., 68, 2) → (...,) distance between the outer eye corners (36, 45)."""
    return (landmarks[..., 45, :] - landmarks[..., 36, :]).norm(dim=-1).clamp(min=1e-6)


def lip_opening(landmarks: Tensor) -> Tensor:
    """(..., 68, 2) → (...,) mean gap of the three inner-lip pairs, in inter-ocular distances
    (0 for lips that touch; negative where the lower lip is drawn above the upper)."""
    upper = landmarks[..., [u for u, _ in INNER_LIP_PAIRS], :]
    lower = landmarks[..., [l for _, l in INNER_LIP_PAIRS], :]
    eyes = (landmarks[..., 36, :] + landmarks[..., 45, :]) / 2
    mouth = (landmarks[..., 48, :] + landmarks[..., 54, :]) / 2
    down = mouth - eyes
    down = down / down.norm(dim=-1, keepdim=True).clamp(min=1e-6)
    gaps = ((lower - upper) * down[..., None, :]).sum(-1)  # (..., 3) along the face's down
    return gaps.mean(-1) / interocular(landmarks)


def polygon_mask(points: Tensor, size: int, feather: int = 1) -> Tensor:
    """(B, P, 2) polygon corners in pixels → (B, 1, size, size) mask, 1 inside (even-odd rule,
    pixel centres), edges softened by a ``2·feather + 1`` box filter (0: hard)."""
    b = points.shape[0]
    axis = torch.arange(size, dtype=torch.float32, device=points.device)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    x, y = x.reshape(1, -1, 1), y.reshape(1, -1, 1)  # (1, S·S, 1)
    start = points.float()
    end = torch.roll(start, -1, dims=1)
    x0, y0 = start[:, None, :, 0], start[:, None, :, 1]  # (B, 1, P)
    x1, y1 = end[:, None, :, 0], end[:, None, :, 1]
    straddles = (y0 > y) != (y1 > y)  # (B, S·S, P)
    dy = torch.where((y1 - y0).abs() < 1e-9, torch.full_like(y1, 1e-9), y1 - y0)
    crossing_x = x0 + (y - y0) * (x1 - x0) / dy
    crossings = (straddles & (x < crossing_x)).sum(-1)  # (B, S·S)
    mask = (crossings % 2).float().reshape(b, 1, size, size)
    if feather > 0:
        k = 2 * feather + 1
        mask = F.avg_pool2d(mask, k, stride=1, padding=feather, count_include_pad=False)
    return mask


def inner_lip_mask(landmarks: Tensor, size: int, feather: int | None = None) -> Tensor:
    """(B, 68, 2) landmarks in pixels of a ``size``-px image → (B, 1, size, size) soft mask of the
    inside of the inner lips (between them when the mouth is open; empty when closed).
    ``feather`` defaults to about 1 % of the size."""
    feather = max(1, round(size / 100)) if feather is None else feather
    return polygon_mask(landmarks[:, INNER_LIPS], size, feather)


def guide_distrust(shot_landmarks: Tensor, target_landmarks: Tensor, size: int,
                   config: MouthConfig | None = None) -> Tensor:
    """How little a shot warped onto a target may be trusted inside the target's mouth.

    Args:
        shot_landmarks: (B, 68, 2) landmarks of the shot being warped.
        target_landmarks: (B, 68, 2) the target's, in pixels of a ``size``-px image.
    Returns:
        (B, 1, size, size) in [0, 1]: inside the target's inner-lip polygon,
        ``clamp((opening_target − opening_shot) / distrust_ramp, 0, 1)``; 0 elsewhere and when
        ``config.guide_distrust`` is off.
    """
    config = config or MouthConfig()
    b = target_landmarks.shape[0]
    if not config.guide_distrust:
        return torch.zeros(b, 1, size, size, device=target_landmarks.device)
    excess = lip_opening(target_landmarks.float()) - lip_opening(shot_landmarks.float().to(target_landmarks.device))
    level = (excess / config.distrust_ramp).clamp(0.0, 1.0)  # (B,)
    return inner_lip_mask(target_landmarks.float(), size) * level[:, None, None, None]
