"""Paste-back that follows the rendered head.

The rendered crop replaces the photo where the head is now (the rendered landmarks' head mask)
and where it was (the source's head mask: the photo there shows the old head, the render the
background it uncovered); elsewhere the photo stays. The union is feathered by the head mask's
own soft edge (:func:`~talkinghead.data.warp.head_mask`) and faded out near the crop's border,
so there is no seam where the crop ends.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
import torch

from talkinghead.data.crop import crop_matrix
from talkinghead.data.warp import head_mask

#: The paste mask is computed on a grid this many points a side and upsampled (it is smooth).
MASK_RESOLUTION = 64


@functools.lru_cache(maxsize=8)
def coarse_head_mask(landmarks: bytes, size: int) -> np.ndarray:
    """(R, R) float32, R = :data:`MASK_RESOLUTION`: the head mask of (68, 2) float32 landmarks
    (given as bytes, so that the source's, the same every frame, is computed once)."""
    marks = torch.from_numpy(np.frombuffer(landmarks, np.float32).reshape(1, 68, 2).copy())
    with torch.inference_mode():
        mask = head_mask(marks, size, resolution=MASK_RESOLUTION, upsample=False)[0, 0].numpy()
    mask.flags.writeable = False  # shared between calls
    return mask


def paste_mask(landmarks: np.ndarray, source_landmarks: np.ndarray, size: int, feather: float) -> np.ndarray:
    """(O, O) float32 in [0, 1]: where the rendered crop replaces the photo.

    Args:
        landmarks: (68, 2) the rendered face's landmarks in O-px crop coordinates.
        source_landmarks: (68, 2) the source photo's, same coordinates.
        feather: the fade at the crop's border, as a fraction of O.
    """
    mask_now = coarse_head_mask(np.asarray(landmarks, np.float32).tobytes(), size)
    union = np.maximum(mask_now, coarse_head_mask(np.asarray(source_landmarks, np.float32).tobytes(), size))
    mask = cv2.resize(union, (size, size), interpolation=cv2.INTER_LINEAR)
    ramp = max(1.0, feather * size)
    edge = np.minimum(np.arange(size) + 0.5, size - 0.5 - np.arange(size)) / ramp
    window = np.clip(edge, 0, 1).astype(np.float32)
    return mask * window[:, None] * window[None, :]


def paste_head(image: np.ndarray, crop: np.ndarray, box: np.ndarray, landmarks: np.ndarray,
               source_landmarks: np.ndarray, feather: float = 0.04) -> np.ndarray:
    """Blend a rendered (O, O, 3) crop into the full image it was cut from, inside the head.

    Args:
        image: (H, W, 3) uint8, the source photo. crop: (O, O, 3) uint8.
        box: the crop square (cx, cy, side) in image pixels.
        landmarks, source_landmarks: see :func:`paste_mask` (O-px crop coordinates).
    Returns:
        (H, W, 3) uint8, a new image; only the crop square's pixels can differ from ``image``.
    """
    size = crop.shape[0]
    h, w = image.shape[:2]
    cx, cy, side = (float(v) for v in box)
    # Work only on the crop square's bounding rectangle in the photo.
    x0, y0 = max(0, int(np.floor(cx - side / 2)) - 1), max(0, int(np.floor(cy - side / 2)) - 1)
    x1, y1 = min(w, int(np.ceil(cx + side / 2)) + 2), min(h, int(np.ceil(cy + side / 2)) + 2)
    out = image.copy()
    if x1 <= x0 or y1 <= y0:
        return out
    forward = crop_matrix(box, size)
    forward[:, 2] += forward[:, :2] @ np.array([x0, y0], np.float64)  # region pixels → crop pixels
    inverse = cv2.invertAffineTransform(forward)
    region = (x1 - x0, y1 - y0)
    warped = cv2.warpAffine(crop, inverse, region, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    mask = paste_mask(landmarks, source_landmarks, size, feather)
    mask = cv2.warpAffine(mask, inverse, region, flags=cv2.INTER_LINEAR, borderValue=0)[..., None]
    patch = out[y0:y1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = (warped * mask + patch * (1 - mask)).round().astype(np.uint8)
    return out
