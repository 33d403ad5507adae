"""Image and landmark metrics of the paper's evaluation (inputs are (H, W, 3) uint8 RGB).

* :func:`ssim`, :func:`psnr` — scikit-image's definitions (``data_range=255``, SSIM over the
  three channels), so numbers match what anyone computes with skimage.
* :func:`nme` — mean point-to-point landmark distance over the inter-ocular distance (outer eye
  corners 36 and 45 of the reference), the usual 68-point normalised mean error.
* :func:`detect_landmarks_on_images` — landmarks dlib finds on generated frames, for NME, and
  whether its face detector sees a face at all.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

#: PSNR of identical images is infinite; report means with this cap (documented in reports).
PSNR_CAP = 100.0


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity of two (H, W, 3) uint8 images (skimage, channel_axis=-1)."""
    return float(structural_similarity(a, b, channel_axis=-1, data_range=255))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB (skimage); ``inf`` for identical images."""
    if np.array_equal(a, b):
        return float("inf")
    return float(peak_signal_noise_ratio(a, b, data_range=255))


def nme(pred: np.ndarray, ref: np.ndarray) -> float | np.ndarray:
    """Normalised mean error of (68, 2) or (T, 68, 2) landmarks against a reference.

    Returns a float for one frame, else a (T,) array with NaN for frames where either input
    has missing (NaN) landmarks — use ``np.nanmean`` to average.
    """
    pred = np.asarray(pred, np.float64)
    ref = np.asarray(ref, np.float64)
    single = pred.ndim == 2
    if single:
        pred, ref = pred[None], ref[None]
    if pred.shape != ref.shape or pred.shape[1:] != (68, 2):
        raise ValueError(f"landmarks must be (T, 68, 2) of equal shapes, got {pred.shape} and {ref.shape}")
    iod = np.linalg.norm(ref[:, 45] - ref[:, 36], axis=-1)
    err = np.linalg.norm(pred - ref, axis=-1).mean(axis=-1) / np.where(iod > 0, iod, np.nan)
    return float(err[0]) if single else err


def detect_landmarks_on_images(images: np.ndarray, driving: np.ndarray, detector) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks on generated frames, and whether a face detector finds a face in each.

    Args:
        images: (T, S, S, 3) uint8 generated frames.
        driving: (T, 68, 2) landmarks they were rendered from (crop pixels).
        detector: a :class:`talkinghead.data.landmarks.LandmarkDetector`.
    Returns:
        landmarks (T, 68, 2) float32 — the shape predictor run in the detected face box, or,
        where no face was detected, in the box of the driving landmarks (so NME stays
        measurable and still penalises features drawn in the wrong place);
        found (T,) bool — the face detector found a face.
    """
    from talkinghead.data.landmarks import box_iou, detector_box_from_landmarks

    out = np.full((len(images), 68, 2), np.nan, np.float32)
    found = np.zeros(len(images), bool)
    for t, (image, lm) in enumerate(zip(images, driving)):
        expected = detector_box_from_landmarks(lm)
        boxes = detector.detect_faces(image)
        box = expected
        if len(boxes):
            found[t] = True
            best = max(boxes, key=lambda b: box_iou(b, expected))
            if box_iou(best, expected) > 0.3:
                box = best
        out[t] = detector.landmarks_in_box(image, box)
    return out, found
