"""Square head crops: where to crop (from landmarks), how to keep it steady over time, and
the affine maps between frame pixels and crop pixels (both ways, for pasting back).

A crop box is ``(cx, cy, side)`` in source pixels: the centre and side of a square. Pixel
centres sit at integer coordinates in both frames (OpenCV's convention), so the square's
edges are at cx ± side/2 and the crop's at -0.5 and size - 0.5.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Crop side as a multiple of the landmarks' extent max(width, height) (brows to chin, or jaw
#: width), VoxCeleb2's framing: our crops of any video look like VoxCeleb2's (forehead, hair and
#: a bit of neck) and a VoxCeleb2 clip maps onto itself (docs/experiments.md#calibrated-constants).
CROP_SCALE = 1.8
#: Vertical offset of the crop centre from the landmarks' bounding-box centre, in extents
#: (positive = down): VoxCeleb2's head sits slightly high in the frame, leaving forehead and
#: hairline above the brows and neck below the chin.
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


def fit_boxes_in_frame(boxes: np.ndarray, width: int, height: int, max_shift: float = 0.25) -> np.ndarray:
    """Shift (T, 3) boxes so the square stays inside a ``width``×``height`` frame, by at most
    ``max_shift`` of the side; a box larger than the frame is centred on it as far as allowed.

    Why: in tightly framed videos (a face filling a 480×480 phone clip) the VoxCeleb-style
    square reaches past the chin out of the frame, and any padding there is an artefact G
    would learn (a reflected chin is a second mouth). Moving the face off-centre a little is
    the lesser evil; what cannot be avoided is padded by replicating the edge.
    """
    out = np.array(boxes, np.float64, copy=True).reshape(-1, 3)
    for axis, limit in ((0, width), (1, height)):
        centre, half = out[:, axis], out[:, 2] / 2
        # the centre that keeps the square inside (or centres it when it is too big)
        wanted = np.where(2 * half <= limit, np.clip(centre, half, limit - half), limit / 2)
        shift = np.clip(wanted - centre, -max_shift * out[:, 2], max_shift * out[:, 2])
        out[:, axis] = centre + shift
    return out.astype(np.float32)


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
                border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """Cut the square ``box`` (cx, cy, side) out of ``image`` (H, W, 3) and resize it to
    (size, size, 3). Parts of the square outside the frame are filled by ``border``:
    replicating the edge pixels by default — no black bars for G to learn, and unlike
    reflection it never mirrors a chin or mouth into the crop.

    When the square is at least twice ``size`` (a head in an HD frame), its region is first
    halved with ``cv2.pyrDown`` (Gaussian, so no aliasing) as often as that keeps it at least
    ``size``, and the final bilinear warp scales by less than 2 — like mip-mapping. This is
    ~4× cheaper than INTER_AREA with a fractional factor.
    """
    side = float(box[2])
    levels = int(np.floor(np.log2(side / size))) if side >= 2 * size else 0
    matrix = crop_matrix(box, size)
    if levels == 0:
        return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=border)
    region, x0, y0 = _region(image, box, border)
    for _ in range(levels):
        region = cv2.pyrDown(region)  # output pixel i is centred on input pixel 2i
    # source → region (shift by x0, y0) → pyramid level (÷ 2**levels) → crop
    f = 1.0 / (1 << levels)
    to_level = np.array([[f, 0, -x0 * f], [0, f, -y0 * f], [0, 0, 1.0]])
    matrix = (np.vstack([matrix, [0, 0, 1.0]]) @ np.linalg.inv(to_level))[:2]
    return cv2.warpAffine(region, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=border)


def _region(image: np.ndarray, box: np.ndarray, border: int) -> tuple[np.ndarray, int, int]:
    """The square's pixels plus a 4-px margin (for the pyramid filter) as (region, x0, y0);
    a view when inside the frame, padded with ``border`` where it leaves it."""
    h, w = image.shape[:2]
    cx, cy, side = (float(v) for v in box)
    x0, y0 = int(np.floor(cx - side / 2)) - 4, int(np.floor(cy - side / 2)) - 4
    x1, y1 = int(np.ceil(cx + side / 2)) + 5, int(np.ceil(cy + side / 2)) + 5
    inner = image[max(0, y0):min(h, y1), max(0, x0):min(w, x1)]
    pads = (max(0, -y0), max(0, y1 - h), max(0, -x0), max(0, x1 - w))
    if inner.size == 0:  # entirely outside the frame: nothing to reflect, use black
        return np.zeros((y1 - y0, x1 - x0) + image.shape[2:], image.dtype), x0, y0
    if any(pads):
        inner = cv2.copyMakeBorder(inner, *pads, borderType=border)
    return inner, x0, y0
