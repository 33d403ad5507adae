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
    """(B, P, 2) corners of convex polygons in pixels (either winding) → (B, 1, size, size)
    mask: each pixel centre's signed distance inside the nearest edge, ramped over
    ``2·feather`` pixels (0: a hard edge at the polygon's border). A non-convex polygon gives
    the intersection of its edges' half-planes (a little less than its inside)."""
    b = points.shape[0]
    axis = torch.arange(int(size), dtype=torch.float32, device=points.device)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    pixels = torch.stack([x.reshape(-1), y.reshape(-1)], -1)  # (S·S, 2)
    start = points.float()
    edge = torch.roll(start, -1, dims=1) - start  # (B, P, 2)
    length = edge.norm(dim=-1, keepdim=True).clamp(min=1e-6)
    normal = torch.stack([-edge[..., 1], edge[..., 0]], -1) / length  # left-hand normals
    # Twice the signed area says the winding; the normals are turned to point inwards.
    area = (start[..., 0] * torch.roll(start[..., 1], -1, 1) - torch.roll(start[..., 0], -1, 1) * start[..., 1]).sum(1)
    normal = normal * torch.where(area < 0, -1.0, 1.0)[:, None, None]
    offset = (normal * start).sum(-1)  # (B, P)
    inside = (pixels @ normal.transpose(1, 2) - offset[:, None, :]).amin(-1)  # (B, S·S) px inside
    ramp = 2.0 * feather if feather > 0 else 1e-3
    mask = (inside / ramp + (0.5 if feather > 0 else 0.0)).clamp(0.0, 1.0)
    mask = mask * (area.abs() / 2).clamp(max=1.0)[:, None]  # a polygon of no area (shut lips) is empty
    return mask.reshape(b, 1, int(size), int(size))


def inner_lip_mask(landmarks: Tensor, size: int, feather: int | None = None) -> Tensor:
    """(B, 68, 2) landmarks in pixels of a ``size``-px image → (B, 1, size, size) soft mask of the
    inside of the inner lips (between them when the mouth is open; empty when closed).
    ``feather`` defaults to about 1 % of the size."""
    size = int(size)  # a traced (ONNX) shape is fixed per graph
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
    size = int(size)
    b = target_landmarks.shape[0]
    if not config.guide_distrust:
        return torch.zeros(b, 1, size, size, device=target_landmarks.device)
    excess = lip_opening(target_landmarks.float()) - lip_opening(shot_landmarks.float().to(target_landmarks.device))
    level = (excess / config.distrust_ramp).clamp(0.0, 1.0)  # (B,)
    if not torch.jit.is_tracing() and not bool((level > 0).any()):  # mouths no wider than the shots: no mask
        return torch.zeros(b, 1, size, size, device=target_landmarks.device)
    return inner_lip_mask(target_landmarks.float(), size) * level[:, None, None, None]
