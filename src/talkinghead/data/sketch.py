"""Landmark sketches: the 68 dlib/iBUG points drawn as coloured polylines, one colour per
facial part, as in Zakharov et al. (2019), Fig. 2. This image is what G is conditioned on."""

from __future__ import annotations

import cv2
import numpy as np
import torch

#: (name, point indices, closed polygon?, RGB colour). Order follows the 68-point iBUG scheme.
FACE_PARTS: tuple[tuple[str, tuple[int, ...], bool, tuple[int, int, int]], ...] = (
    ("jaw", tuple(range(0, 17)), False, (255, 255, 255)),
    ("right_brow", tuple(range(17, 22)), False, (255, 128, 0)),
    ("left_brow", tuple(range(22, 27)), False, (255, 200, 0)),
    ("nose_bridge", tuple(range(27, 31)), False, (0, 128, 255)),
    ("nose_base", tuple(range(30, 36)), False, (0, 200, 255)),
    ("right_eye", tuple(range(36, 42)), True, (0, 255, 0)),
    ("left_eye", tuple(range(42, 48)), True, (128, 255, 0)),
    ("outer_lip", tuple(range(48, 60)), True, (255, 0, 128)),
    ("inner_lip", tuple(range(60, 68)), True, (255, 0, 255)),
)


def sketch_thickness(size: int) -> int:
    """Line width in pixels: 1 px at 64, 2 px at 128-256 — thin enough to keep lip detail."""
    return max(1, int(round(size / 128)))


def landmarks_to_sketch(landmarks: np.ndarray, size: int | None = None, thickness: int | None = None) -> np.ndarray:
    """Draw 68 landmarks as a colour sketch.

    Args:
        landmarks: (68, 2) float array of (x, y) pixel coordinates in a ``size``×``size`` image.
        size: side of the square output image; default: the smallest multiple of 64 pixels that
            holds every point (an avatar's crop size for landmarks in its crop, e.g. ``avatar.landmarks[0]``).
        thickness: line width; defaults to :func:`sketch_thickness`.

    Returns:
        (size, size, 3) uint8 RGB image, black background.
    """
    pts = np.asarray(landmarks, dtype=np.float32)
    if pts.shape != (68, 2):
        raise ValueError(f"landmarks must have shape (68, 2), got {pts.shape}")
    if size is None:
        extent = float(np.nanmax(pts)) if np.isfinite(pts).any() else 0.0
        size = 64 * max(1, int(np.ceil((extent + 1) / 64)))
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    if not np.isfinite(pts).all():
        return canvas
    thickness = thickness or sketch_thickness(size)
    # Fixed-point coordinates (4 fractional bits) keep sub-pixel precision with anti-aliasing.
    shift = 4
    fixed = np.round(pts * (1 << shift)).astype(np.int32)
    for _name, idx, closed, colour in FACE_PARTS:
        cv2.polylines(canvas, [fixed[list(idx)]], closed, colour, thickness, cv2.LINE_AA, shift)
    return canvas


def sketch_to_tensor(sketch: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 → (3, H, W) float in [-1, 1]."""
    return torch.from_numpy(sketch).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB → (3, H, W) float in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def tensor_to_image(tensor: torch.Tensor) -> np.ndarray:
    """(3, H, W) or (B, 3, H, W) float in [-1, 1] → (H, W, 3) / (B, H, W, 3) uint8 RGB."""
    t = tensor.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).cpu()
    return t.movedim(-3, -1).numpy()


def landmarks_to_sketch_batch(landmarks: np.ndarray, size: int) -> torch.Tensor:
    """(B, 68, 2) → (B, 3, size, size) float sketches in [-1, 1]."""
    return torch.stack([sketch_to_tensor(landmarks_to_sketch(l, size)) for l in landmarks])
