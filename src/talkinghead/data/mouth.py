"""The mouth's inside: where a warped shot cannot be trusted, and where an interior is drawn.

A shot whose lips are closer together than the target's has, between its lips, lips and teeth;
warped onto an open target they are stretched into the "horse teeth" and vertical smears of a
classical warp. :func:`guide_distrust` marks the region inside the target's inner-lip polygon,
distrusted in proportion to how far the target's opening exceeds the shot's
(:attr:`~talkinghead.config.MouthConfig.distrust_ramp` inter-ocular distances to full
distrust): zero where the openings are equal, and nothing at all for a closed target mouth.

The mouth generator (:mod:`talkinghead.models.mouth`) works on canonical mouth crops:
:func:`mouth_crop_matrix` levels and scales each mouth the same way, :func:`cut_mouth` cuts it
from a uint8 frame at any resolution, :func:`inner_lip_polygon_mask` marks what is filled.

Landmarks are iBUG 68 points; the inner lips are 60–67. The distrust functions are batched
torch (they run in data-loader workers, in inference and in an ONNX graph); the crop functions
are numpy + OpenCV on frames. All work at any image size.
"""

from __future__ import annotations

import cv2
import numpy as np
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


# --- Canonical mouth crops (numpy + OpenCV: cut from uint8 frames, for the mouth generator) ---

def mouth_crop_matrix(landmarks: np.ndarray, size: int, span: float) -> np.ndarray:
    """(68, 2) landmarks in image pixels → (2, 3) affine map from the image to a ``size``-px
    mouth crop: the outer corners (48, 54) level and ``span`` · size apart, the inner lips'
    centre in the crop's centre."""
    marks = np.asarray(landmarks, np.float64)
    axis = marks[54] - marks[48]
    width = max(float(np.hypot(*axis)), 1e-6)
    scale = span * size / width
    cos, sin = axis / width * scale
    rotate = np.array([[cos, sin], [-sin, cos]])  # the corners' line → +x, scaled
    centre = marks[60:68].mean(0)
    return np.concatenate([rotate, ((size - 1) / 2 - rotate @ centre)[:, None]], 1)


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(2, 3) affine map applied to (..., 2) points."""
    points = np.asarray(points, np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def cut_mouth(image: np.ndarray, landmarks: np.ndarray, size: int, span: float) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 frame + its (68, 2) landmarks → the (size, size, 3) canonical mouth crop
    and its (2, 3) image → crop matrix. A mouth larger than the crop is low-passed first (a
    512-px face's mouth would alias when sampled down 3×); borders are replicated."""
    matrix = mouth_crop_matrix(landmarks, size, span)
    shrink = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if shrink < 0.7:
        # Only the window the crop reads is blurred (a full 512-px frame would cost 10× more).
        corners = apply_affine(cv2.invertAffineTransform(matrix), np.array([[0, 0], [size, 0], [0, size], [size, size]]))
        pad = int(np.ceil(2 / shrink))
        x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int) - pad, 0)
        x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + pad, [image.shape[1] - 1, image.shape[0] - 1])
        if x1 > x0 and y1 > y0:
            window = cv2.GaussianBlur(image[y0:y1 + 1, x0:x1 + 1], (0, 0), 0.45 / shrink)
            shifted = matrix.copy()
            shifted[:, 2] += matrix[:, :2] @ np.array([x0, y0], np.float64)
            crop = cv2.warpAffine(window, shifted, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            return crop, matrix
    crop = cv2.warpAffine(np.ascontiguousarray(image), matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    return crop, matrix


#: Gaussian σ (crop pixels) of the mouth generator's mask edge, in training and inference alike.
GENERATOR_MASK_SOFTNESS = 0.7


def generator_mask(inner_points: np.ndarray, size: int, grow: float) -> np.ndarray:
    """(8, 2) inner-lip points in a ``size``-px canonical crop → the (size, size) float32 mask the
    mouth generator blanks and fills: the polygon grown by ``grow`` pixels, its edge softened."""
    return inner_lip_polygon_mask(inner_points, (size, size), grow, GENERATOR_MASK_SOFTNESS)


def cut_mouth_for_generator(image: np.ndarray, landmarks: np.ndarray, size: int, span: float,
                            grow: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 frame + its (68, 2) landmarks → its canonical mouth crop (size, size, 3),
    the generator's mask there (:func:`generator_mask`) and the (2, 3) image → crop matrix."""
    crop, matrix = cut_mouth(image, landmarks, size, span)
    return crop, generator_mask(apply_affine(matrix, np.asarray(landmarks)[60:68]), size, grow), matrix


def inner_lip_polygon_mask(points: np.ndarray, size_hw: tuple[int, int], grow: float = 0.0,
                           soft: float = 0.0) -> np.ndarray:
    """(8, 2) inner-lip points (60–67) in pixels → (H, W) float32 mask in [0, 1]: the polygon
    (anti-aliased), grown by ``grow`` pixels (landmarks miss the lips' edge by a pixel or
    two) and blurred by a Gaussian of σ ``soft`` pixels."""
    mask = np.zeros(size_hw, np.uint8)
    cv2.fillPoly(mask, [np.round(np.asarray(points) * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    if grow > 0:
        k = 2 * int(np.ceil(grow)) + 1
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    mask = mask.astype(np.float32) / 255
    if soft > 0:
        mask = cv2.GaussianBlur(mask, (0, 0), soft)
    return mask
