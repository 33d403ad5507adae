"""Image and landmark metrics of the paper's evaluation.

Images are ``(H, W, 3) uint8 RGB`` (or a batch ``(T, H, W, 3)``); landmarks are the 68-point
scheme in pixels, ``(68, 2)`` or ``(T, 68, 2)``, NaN where missing.

* :func:`ssim`, :func:`psnr` — scikit-image's definitions, reimplemented for speed and batches:
  ``structural_similarity(a, b, channel_axis=-1, data_range=255)`` (7×7 uniform window, sample
  covariance, K1 = 0.01, K2 = 0.03, mean over the valid interior and over channels) and
  ``peak_signal_noise_ratio(a, b, data_range=255)``. They agree with skimage to ~1e-14
  (tests/test_metrics.py checks 1e-9) and SSIM is ~2.5× faster on 256² frames.
* PSNR of identical images is ``inf``; :func:`mean_psnr` averages frames with each value
  capped at :data:`PSNR_CAP` (100 dB), so one perfect frame does not make the mean infinite.
* :func:`nme` — mean point-to-point landmark distance over the inter-ocular distance of the
  reference (outer eye corners, points 36 and 45), the usual 68-point normalised mean error.
  Frames where either side has missing landmarks are NaN; :func:`mean_nme` excludes and
  counts them.
* :func:`detect_landmarks_on_images` / :func:`nme_of_images` — landmarks dlib finds on
  generated frames, NME against the driving landmarks, and the fraction of frames in which
  dlib's face detector finds a face at all (the demo's "a face detector finds a face in at
  least 90 % of frames").
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: PSNR of identical images is infinite; means over frames cap each frame at this value (dB).
PSNR_CAP = 100.0

_SSIM_WIN = 7  # skimage's default window (uniform filter, gaussian_weights=False)
_SSIM_K1, _SSIM_K2 = 0.01, 0.03

#: Outer eye corners of the 68-point scheme (0-based): the inter-ocular normaliser of NME.
LEFT_EYE_OUTER, RIGHT_EYE_OUTER = 36, 45


def _image_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"images must have the same shape, got {a.shape} and {b.shape}")
    if a.ndim not in (3, 4) or a.shape[-1] != 3:
        raise ValueError(f"expected (H, W, 3) or (T, H, W, 3) RGB images, got {a.shape}")
    single = a.ndim == 3
    return (a[None], b[None], True) if single else (a, b, False)


def _ssim_one(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    """skimage's SSIM of one (H, W, C) pair, all channels at once (OpenCV box filter)."""
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    win = (_SSIM_WIN, _SSIM_WIN)

    def box(z: np.ndarray) -> np.ndarray:
        # The border mode is irrelevant: skimage averages only pixels whose window lies inside.
        return cv2.blur(z, win, borderType=cv2.BORDER_REFLECT)

    ux, uy = box(x), box(y)
    uxx, uyy, uxy = box(x * x), box(y * y), box(x * y)
    n = _SSIM_WIN * _SSIM_WIN
    cov_norm = n / (n - 1.0)  # sample covariance, as skimage's default
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1 = (_SSIM_K1 * data_range) ** 2
    c2 = (_SSIM_K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    pad = (_SSIM_WIN - 1) // 2
    s = s[pad:-pad, pad:-pad]
    return float(s.reshape(-1, s.shape[-1]).mean(axis=0, dtype=np.float64).mean())


def ssim(a: np.ndarray, b: np.ndarray) -> float | np.ndarray:
    """Structural similarity of (H, W, 3) uint8 RGB images → float, or of (T, H, W, 3)
    batches → (T,) float64. Equal to skimage's
    ``structural_similarity(a, b, channel_axis=-1, data_range=255)``; images must be at least
    7×7 (skimage's window)."""
    a, b, single = _image_pair(a, b)
    if min(a.shape[1:3]) < _SSIM_WIN:
        raise ValueError(f"SSIM needs images of at least {_SSIM_WIN}×{_SSIM_WIN} px, got {a.shape[1:3]}")
    out = np.array([_ssim_one(x, y, 255.0) for x, y in zip(a, b)], np.float64)
    return float(out[0]) if single else out


def psnr(a: np.ndarray, b: np.ndarray) -> float | np.ndarray:
    """Peak signal-to-noise ratio in dB of (H, W, 3) uint8 RGB images → float, or of
    (T, H, W, 3) batches → (T,). Equal to skimage's ``peak_signal_noise_ratio(a, b,
    data_range=255)``; ``inf`` for identical images (average with :func:`mean_psnr`)."""
    a, b, single = _image_pair(a, b)
    diff = a.astype(np.float64) - b.astype(np.float64)
    mse = np.mean(np.square(diff).reshape(len(a), -1), axis=1)
    with np.errstate(divide="ignore"):
        out = 10.0 * np.log10((255.0 ** 2) / mse)
    return float(out[0]) if single else out


def mean_psnr(values, cap: float = PSNR_CAP) -> float:
    """Mean PSNR over frames with each frame capped at ``cap`` dB (identical frames give
    ``inf``, which would otherwise swamp the mean); NaN entries are ignored. NaN if empty."""
    v = np.asarray(values, np.float64).reshape(-1)
    v = v[~np.isnan(v)]
    return float(np.minimum(v, cap).mean()) if len(v) else float("nan")


def nme(pred: np.ndarray, ref: np.ndarray) -> float | np.ndarray:
    """Normalised mean error of (68, 2) or (T, 68, 2) landmarks against a reference.

    Per frame: mean over the 68 points of ‖pred − ref‖ divided by the reference's inter-ocular
    distance ‖ref[45] − ref[36]‖ (outer eye corners). Returns a float for one frame, else a
    (T,) array. A frame is NaN where either side has a missing (NaN) point or the reference's
    eye corners coincide; :func:`mean_nme` excludes and counts such frames.
    """
    pred = np.asarray(pred, np.float64)
    ref = np.asarray(ref, np.float64)
    single = pred.ndim == 2
    if single:
        pred, ref = pred[None], ref[None]
    if pred.shape != ref.shape or pred.shape[1:] != (68, 2):
        raise ValueError(f"landmarks must be (68, 2) or (T, 68, 2) of equal shapes, got {pred.shape} and {ref.shape}")
    iod = np.linalg.norm(ref[:, RIGHT_EYE_OUTER] - ref[:, LEFT_EYE_OUTER], axis=-1)
    iod = np.where(iod > 0, iod, np.nan)
    err = np.linalg.norm(pred - ref, axis=-1).mean(axis=-1) / iod
    return float(err[0]) if single else err


def mean_nme(per_frame) -> tuple[float, int]:
    """(mean NME over the frames where it is defined, number of frames excluded as NaN).
    The mean is NaN when no frame is usable."""
    v = np.asarray(per_frame, np.float64).reshape(-1)
    ok = ~np.isnan(v)
    return (float(v[ok].mean()) if ok.any() else float("nan")), int((~ok).sum())


#: Generated frames smaller than this (longer side, px) are enlarged for the shape predictor, and
#: its landmarks mapped back: on a small face dlib's predictor is noisy, and the jitter figure (a
#: second difference) amplifies that noise (docs/experiments.md, "The jitter instrument").
LANDMARK_SIZE = 512


def _enlarge(image: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """(H, W, 3) → a copy whose longer side is ≥ ``size`` (bicubic), and its scale factor."""
    scale = size / max(image.shape[:2])
    if scale <= 1:
        return image, 1.0
    h, w = image.shape[:2]
    big = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_CUBIC)
    return big, big.shape[1] / w


def detect_landmarks_on_images(images: np.ndarray, driving: np.ndarray, detector=None,
                               enlarge_to: int = LANDMARK_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks on generated frames, and whether a face detector finds a face in each.

    Args:
        images: (T, H, W, 3) uint8 RGB generated frames.
        driving: (T, 68, 2) landmarks they were rendered from (same pixels); NaN rows allowed.
        detector: a :class:`talkinghead.data.landmarks.LandmarkDetector` (default: dlib's).
        enlarge_to: the shape predictor runs on a copy enlarged to this longer side (see
            :data:`LANDMARK_SIZE`); 0: on the frame as it is.
    Returns:
        landmarks (T, 68, 2) float32 — the shape predictor run in the detected face box that
        overlaps the driving landmarks' box (IoU > 0.3), else in the box derived from the driving
        landmarks, so NME stays measurable (and still penalises features drawn in the wrong
        place) when the detector misses; NaN only where there is neither a usable driving box
        nor a detected face;
        found (T,) bool — the face detector found a face anywhere in the frame.
    """
    from talkinghead.data.landmarks import box_iou, detector_box_from_landmarks, get_detector

    detector = detector if detector is not None else get_detector("dlib")
    images = np.asarray(images)
    driving = np.asarray(driving, np.float32)
    if images.ndim != 4 or driving.shape != (len(images), 68, 2):
        raise ValueError(f"expected (T, H, W, 3) images and (T, 68, 2) landmarks, got {images.shape} and {driving.shape}")
    out = np.full((len(images), 68, 2), np.nan, np.float32)
    found = np.zeros(len(images), bool)
    for t, (image, lm) in enumerate(zip(images, driving)):
        expected = detector_box_from_landmarks(lm) if np.isfinite(lm).all() else None
        boxes = detector.detect_faces(image)  # resizes to its own detection size anyway
        found[t] = len(boxes) > 0
        box = expected
        if len(boxes):
            if expected is None:
                box = boxes[0]  # largest
            else:
                best = max(boxes, key=lambda b: box_iou(b, expected))
                if box_iou(best, expected) > 0.3:
                    box = best
        if box is not None:
            big, scale = _enlarge(image, enlarge_to) if enlarge_to else (image, 1.0)
            # Pixel centres: x in the frame is (x + 0.5)·scale − 0.5 in the enlarged copy.
            marks = detector.landmarks_in_box(big, (np.asarray(box, np.float32) + 0.5) * scale - 0.5)
            out[t] = (marks + 0.5) / scale - 0.5
    return out, found


@dataclass
class LandmarkScore:
    """Result of :func:`nme_of_images`."""

    per_frame: np.ndarray  # (T,) NME, NaN where undefined
    nme: float  # mean over defined frames (NaN if none)
    excluded: int  # frames without usable landmarks (not in the mean)
    face_found: np.ndarray  # (T,) bool: dlib's face detector found a face
    face_found_rate: float  # fraction of frames with a face (the demo's ≥ 90 % criterion)
    landmarks: np.ndarray  # (T, 68, 2) landmarks found on the generated frames


def nme_of_images(generated_images: np.ndarray, driving_landmarks: np.ndarray, detector=None) -> LandmarkScore:
    """NME of the landmarks dlib finds on generated frames against the driving landmarks, and
    the face-detection rate (see :func:`detect_landmarks_on_images`)."""
    found_lm, found = detect_landmarks_on_images(generated_images, driving_landmarks, detector)
    per_frame = nme(found_lm, np.asarray(driving_landmarks, np.float32)) if len(found) else np.zeros(0)
    mean, excluded = mean_nme(per_frame)
    rate = float(found.mean()) if len(found) else float("nan")
    return LandmarkScore(per_frame, mean, excluded, found, rate, found_lm)


#: Side (px) to which face boxes are resampled before the sharpness measure.
SHARPNESS_SIZE = 96


def _face_box_crop(image: np.ndarray, landmarks: np.ndarray, size: int) -> np.ndarray:
    """The landmarks' bounding box (square, grown 10 %) cut from ``image``, grey, resampled to size²."""
    lo, hi = np.nanmin(landmarks, 0), np.nanmax(landmarks, 0)
    c, half = (lo + hi) / 2, max(hi - lo) * 0.55
    x0, y0 = (c - half).round().astype(int)
    x1, y1 = (c + half).round().astype(int)
    h, w = image.shape[:2]
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return np.zeros((size, size), np.float32)
    grey = cv2.cvtColor(np.ascontiguousarray(image[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)


def sharpness(image: np.ndarray, landmarks: np.ndarray, size: int = SHARPNESS_SIZE) -> float:
    """Variance of the Laplacian over the face box of (H, W, 3) uint8 ``image`` (box from (68, 2)
    ``landmarks``), resampled to ``size``²: high for crisp detail, low for a blurry face."""
    return float(cv2.Laplacian(_face_box_crop(image, landmarks, size), cv2.CV_32F).var())


def sharpness_ratio(generated: np.ndarray, real: np.ndarray, landmarks: np.ndarray) -> float:
    """Sharpness of a generated frame ÷ that of the real target, both over the target's face box
    (1 = as sharp as the real frame; a blurry rendering scores well below 1)."""
    ref = sharpness(real, landmarks)
    return sharpness(generated, landmarks) / ref if ref > 0 else float("nan")


def image_scores(generated: np.ndarray, real: np.ndarray, landmarks: np.ndarray) -> tuple[float, float, float]:
    """SSIM, PSNR (capped at :data:`PSNR_CAP`) and sharpness ratio of one generated (S, S, 3)
    frame against the real one, whose landmarks (68, 2) give the face box."""
    return (float(ssim(generated, real)), float(min(psnr(generated, real), PSNR_CAP)),
            float(sharpness_ratio(generated, real, landmarks)))


def landmark_acceleration(landmarks: np.ndarray) -> float:
    """Mean |x[t+1] − 2x[t] + x[t−1]| of a (T, 68, 2) track over frames and points, in
    inter-ocular distances (frames with missing landmarks are skipped)."""
    marks = np.asarray(landmarks, np.float64)
    if len(marks) < 3:
        return float("nan")
    acc = np.abs(marks[2:] - 2 * marks[1:-1] + marks[:-2]).mean(axis=(1, 2))
    iod = np.linalg.norm(marks[:, RIGHT_EYE_OUTER] - marks[:, LEFT_EYE_OUTER], axis=-1)
    scale = np.nanmedian(iod)
    acc = acc[np.isfinite(acc)]
    return float(acc.mean() / scale) if len(acc) and scale > 0 else float("nan")


def jitter_ratio(output_landmarks: np.ndarray, driver_landmarks: np.ndarray) -> float:
    """Mean frame-to-frame acceleration of the landmarks found on the output, divided by the
    driver's: 1 = the output shakes as much as the driver moves; above 1 = added jitter."""
    driver = landmark_acceleration(driver_landmarks)
    return landmark_acceleration(output_landmarks) / driver if driver > 0 else float("nan")
