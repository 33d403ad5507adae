"""Square head crops: where to crop (from landmarks), how to keep it steady over time, and
the affine maps between frame pixels and crop pixels (both ways, for pasting back).

A crop box is ``(cx, cy, side)`` in source pixels: the centre and side of a square. Pixel
centres sit at integer coordinates in both frames (OpenCV's convention), so the square's
edges are at cx ± side/2 and the crop's at -0.5 and size - 0.5.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Crop side as a multiple of the landmarks' extent max(width, height) (brows to chin, or
#: jaw width). Measured on the shared 224×224 VoxCeleb2 clips (93 frames): the frame side is
#: 1.79× the extent (10th–90th percentile 1.68–1.88). Using the same framing makes our crops
#: of any video look like VoxCeleb2 (forehead, hair and a bit of neck), and makes a
#: VoxCeleb2 clip map onto itself.
CROP_SCALE = 1.8
#: Vertical offset of the crop centre from the landmarks' bounding-box centre, in extents
#: (positive = down). VoxCeleb2 frames are centred 0.107 extents *below* it (median; 10th–90th
#: percentile 0.08–0.14): the square reaches ~0.4 extents above the brows (forehead and
#: hairline) and ~0.4 below the chin (neck), i.e. the head sits slightly high in the frame.
CROP_SHIFT_Y = 0.1

#: smooth_boxes: a clip whose box centre stays within this fraction of the box side of its
#: median (95th percentile), and whose side within this fraction of its median, gets one
#: fixed box for the whole clip.
STATIC_TOLERANCE = 0.06


def square_box_from_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """(68, 2) landmarks → (3,) float32 crop box (cx, cy, side) around the whole head."""
    pts = np.asarray(landmarks, np.float32)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    extent = float(max(hi[0] - lo[0], hi[1] - lo[1]))
    cx = (lo[0] + hi[0]) / 2
    cy = (lo[1] + hi[1]) / 2 + CROP_SHIFT_Y * extent
    return np.array([cx, cy, CROP_SCALE * extent], np.float32)


def _interpolate_gaps(boxes: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Linear interpolation over invalid frames; leading/trailing gaps hold the nearest."""
    t = np.arange(len(boxes))
    good = np.flatnonzero(valid)
    return np.stack([np.interp(t, good, boxes[good, k]) for k in range(boxes.shape[1])], axis=1)


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average along axis 0, edges padded by reflection (no shrink at ends)."""
    if window <= 1 or len(values) < 2:
        return values.copy()
    window = min(window, 2 * len(values) - 1) | 1  # odd, and reflect-padding must fit
    half = window // 2
    padded = np.pad(values, ((half, half), (0, 0)), mode="reflect")
    kernel = np.ones(window) / window
    return np.stack([np.convolve(padded[:, k], kernel, mode="valid") for k in range(values.shape[1])], axis=1)


def box_motion(boxes: np.ndarray, valid: np.ndarray) -> float:
    """How much a clip's crop box moves: the 95th percentile over valid frames of
    max(|centre - median centre|, |side - median side|), as a fraction of the median side."""
    good = np.asarray(boxes, np.float64)[np.asarray(valid, bool)]
    if len(good) == 0:
        return 0.0
    median = np.median(good, axis=0)
    deviation = np.abs(good - median).max(axis=1) / max(median[2], 1e-6)
    return float(np.percentile(deviation, 95))


def smooth_boxes(boxes: np.ndarray, valid: np.ndarray, window: int = 9,
                 static_tolerance: float = STATIC_TOLERANCE) -> np.ndarray:
    """Temporally steady crop boxes for a clip.

    Per-frame boxes from landmarks jitter by a few pixels (the shape predictor's noise); a
    crop that follows them shakes the whole image, which G would have to learn. So:

    * Clips whose box barely moves (:func:`box_motion` ≤ ``static_tolerance``) get one fixed
      box, the per-coordinate median of valid frames. This is the case of clips that are
      already face crops (VoxCeleb2's 224×224 videos were cropped around a smoothed face
      track): the residual motion is mostly our detector's noise, and a fixed box turns
      the crop into a pure rescale of the source, with no added shake at all.
    * Other clips: invalid frames are interpolated from their neighbours, then a centred
      moving average of ``window`` frames (~0.35 s at 25 fps) removes the jitter while
      following real head motion.

    Args:
        boxes: (T, 3) per-frame (cx, cy, side); rows of invalid frames are ignored.
        valid: (T,) bool.

    Returns:
        (T, 3) float32 boxes, defined for every frame (all-invalid input → input unchanged).
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 3)
    valid = np.asarray(valid, bool) & np.isfinite(boxes).all(axis=1)
    if not valid.any():
        return boxes.astype(np.float32)
    if box_motion(boxes, valid) <= static_tolerance:
        fixed = np.median(boxes[valid], axis=0)
        return np.tile(fixed, (len(boxes), 1)).astype(np.float32)
    filled = _interpolate_gaps(boxes, valid)
    return _moving_average(filled, window).astype(np.float32)


# -- affine maps ------------------------------------------------------------------------------

def crop_matrix(box: np.ndarray, size: int) -> np.ndarray:
    """2×3 float64 affine map from source pixels to ``size``×``size`` crop pixels:
    the square (cx ± side/2, cy ± side/2) goes onto the crop's edges (-0.5 … size-0.5)."""
    cx, cy, side = (float(v) for v in box)
    s = size / side
    return np.array([[s, 0.0, (0.5 - cx + side / 2) * s - 0.5],
                     [0.0, s, (0.5 - cy + side / 2) * s - 0.5]], np.float64)


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, np.float64)
    return (pts @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def landmarks_to_crop(landmarks: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """(..., 2) points in source pixels → crop pixels (NaN stays NaN)."""
    return _apply(crop_matrix(box, size), landmarks)


def crop_to_image(points: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """(..., 2) points in crop pixels → source pixels; the inverse of :func:`landmarks_to_crop`."""
    return _apply(cv2.invertAffineTransform(crop_matrix(box, size)), points)


def crop_square(image: np.ndarray, box: np.ndarray, size: int,
                border: int = cv2.BORDER_REFLECT_101) -> np.ndarray:
    """Cut the square ``box`` (cx, cy, side) out of ``image`` (H, W, 3) and resize it to
    (size, size, 3). Parts of the square outside the frame are filled by ``border``
    (reflection by default: plausible texture rather than black bars for G to learn).

    Strong downscaling (side > 1.5 × size, e.g. a head in a 4K frame) first shrinks the
    region with area averaging, so the bilinear warp does not alias.
    """
    matrix = crop_matrix(box, size)
    side = float(box[2])
    factor = int(side / size / 1.5) + 1 if side > 1.5 * size else 1
    if factor > 1:
        h, w = image.shape[:2]
        cx, cy = float(box[0]), float(box[1])
        # Region of the square (+1 px), padded to cover it if it leaves the frame.
        x0, y0 = int(np.floor(cx - side / 2)) - 1, int(np.floor(cy - side / 2)) - 1
        x1, y1 = int(np.ceil(cx + side / 2)) + 2, int(np.ceil(cy + side / 2)) + 2
        shift = np.array([[1.0, 0, -x0], [0, 1.0, -y0]])
        region = cv2.warpAffine(image, shift, (x1 - x0, y1 - y0), flags=cv2.INTER_NEAREST, borderMode=border)
        small_w, small_h = max(1, round((x1 - x0) / factor)), max(1, round((y1 - y0) / factor))
        region = cv2.resize(region, (small_w, small_h), interpolation=cv2.INTER_AREA)
        # source → region → small region (pixel-centre convention) → crop
        sx, sy = small_w / (x1 - x0), small_h / (y1 - y0)
        to_small = np.array([[sx, 0, (0.5 - x0) * sx - 0.5], [0, sy, (0.5 - y0) * sy - 0.5], [0, 0, 1]])
        matrix = (np.vstack([matrix, [0, 0, 1]]) @ np.linalg.inv(to_small))[:2]
        image = region
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=border)
