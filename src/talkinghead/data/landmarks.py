"""Face detection and 68-point landmarks (iBUG scheme), per image and tracked through video.

The default back end is dlib: the HOG frontal face detector and the 68-point shape predictor
(Kazemi & Sullivan 2014), loaded from the ``face_recognition_models`` package (offline).

Tracking through video (detecting only when needed) is :mod:`talkinghead.data.tracking`.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from typing import Iterable, Protocol, runtime_checkable

import numpy as np

from talkinghead.errors import NoFaceError, TalkingHeadError

#: Index permutation that mirrors the 68-point scheme left↔right (for horizontal flips).
MIRROR_68 = np.array(
    list(range(16, -1, -1))  # jaw
    + list(range(26, 21, -1)) + list(range(21, 16, -1))  # brows
    + list(range(27, 31))  # nose bridge
    + [35, 34, 33, 32, 31]  # nose base
    + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40]  # eyes
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]  # outer lip
    + [64, 63, 62, 61, 60, 67, 66, 65]  # inner lip
)


def mirror_landmarks(landmarks: np.ndarray, size: int) -> np.ndarray:
    """(..., 68, 2) landmarks in an S×S image → those of the horizontally flipped image, in the
    68-point order (the left eye's points are the flipped right eye's)."""
    flipped = np.array(landmarks)[..., MIRROR_68, :]
    flipped[..., 0] = size - 1 - flipped[..., 0]
    return flipped


#: Detector box from landmarks (offset of the landmarks' bounding-box centre, in extents
#: max(w, h)): giving the shape predictor the box dlib's HOG detector would give reproduces the
#: framing it was trained with (fitted values: docs/experiments.md#calibrated-constants).
_HOG_BOX_OFFSET = np.array([-0.017, -0.098], np.float32)
_HOG_BOX_SCALE = 1.02


# -- protocol ---------------------------------------------------------------------------------

@runtime_checkable
class LandmarkDetector(Protocol):
    """What the pipeline needs from a face/landmark back end."""

    name: str

    def detect_faces(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) RGB (or (H, W) gray) uint8 → (F, 4) float32 boxes x0, y0, x1, y1 in
        image pixels, largest first; (0, 4) when there is no face."""
        ...

    def landmarks_in_box(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        """68 (x, y) landmarks, (68, 2) float32 in image pixels, of the face in ``box`` (4,)."""
        ...


# -- dlib -------------------------------------------------------------------------------------

def dlib_model_dir() -> Path:
    """Folder of the dlib model files shipped by ``face_recognition_models`` (located without
    importing it: its ``__init__`` imports pkg_resources, which warns or fails)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise TalkingHeadError(
            "face_recognition_models is not installed (pip install face-recognition-models): "
            "it provides dlib's landmark model"
        )
    return Path(os.path.dirname(spec.origin)) / "models"


def _model_file(name: str) -> str:
    path = dlib_model_dir() / name
    if not path.is_file():
        raise TalkingHeadError(f"{path}: dlib model file missing (reinstall face-recognition-models)")
    return str(path)


def import_dlib():
    """The dlib module, or a clear error naming the package to install."""
    try:
        import dlib
    except ImportError:
        raise TalkingHeadError("dlib is not installed (pip install dlib-bin)") from None
    return dlib


@functools.lru_cache(maxsize=None)
def _dlib_models(use_cnn: bool):
    """(detector, shape predictor), loaded once per process (the predictor file is 100 MB)."""
    dlib = import_dlib()
    predictor = dlib.shape_predictor(_model_file("shape_predictor_68_face_landmarks.dat"))
    if use_cnn:
        detector = dlib.cnn_face_detection_model_v1(_model_file("mmod_human_face_detector.dat"))
    else:
        detector = dlib.get_frontal_face_detector()
    return detector, predictor


def to_gray(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB or (H, W) uint8 → (H, W) uint8, contiguous."""
    import cv2

    if image.ndim == 2:
        return np.ascontiguousarray(image)
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


class DlibLandmarkDetector:
    """dlib HOG (or CNN) face detector + 68-point shape predictor.

    Detection runs on a copy of the frame resized so that its longer side is
    ``detect_size`` px (448 by default). Why: HOG costs time in proportion to pixels, and its
    sliding window is 80 px; faces in talking-head footage span at least ~1/5 of the longer
    side, so at 448 px they are still ≥ 90 px and found without dlib's 2× upsampling pass,
    while a 1280×720 frame has 8× fewer pixels to scan. Small images (a 224×224 VoxCeleb
    crop, a 256 portrait) are *enlarged* to 448 px for the same reason: a face that fills
    80–100 px of a small portrait would otherwise sit at the window's limit. On the shared
    clips this finds a face in 167 of 170 sampled frames (320 px: 161 of 170) in ~15 ms.
    The shape predictor then runs on the full-resolution image for precise landmarks.
    """

    accepts_gray = True

    def __init__(self, detect_size: int = 448, use_cnn: bool = False, threshold: float = -0.3):
        self.detect_size = int(detect_size)
        self.use_cnn = bool(use_cnn)
        #: HOG score threshold slightly below dlib's 0, to recover semi-profile faces (confident boxes still win).
        self.threshold = float(threshold)
        self.name = "dlib-cnn" if use_cnn else "dlib"
        self._dlib = import_dlib()
        self._detector, self._predictor = _dlib_models(self.use_cnn)

    # public API --------------------------------------------------------------------------
    def detect_faces(self, image: np.ndarray) -> np.ndarray:
        import cv2

        gray = to_gray(image)
        h, w = gray.shape
        scale = self.detect_size / max(h, w)
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        small = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=interp)
        boxes = self._detect_raw(small) / scale
        return _sorted_by_area(boxes)

    def landmarks_in_box(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        gray = to_gray(image)
        x0, y0, x1, y1 = (int(round(float(v))) for v in box)
        shape = self._predictor(gray, self._dlib.rectangle(x0, y0, x1, y1))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)

    def verify_box(self, image: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        """Look for a face in a window twice the size of ``box`` (4,), scaled so the box is
        ~120 px: a cheap (~2–4 ms) check that a track is still on a face. Returns the detected
        box overlapping ``box`` (IoU > 0.3), or None."""
        import cv2

        gray = to_gray(image)
        h, w = gray.shape
        x0, y0, x1, y1 = (float(v) for v in box)
        side = max(x1 - x0, y1 - y0, 1.0)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        rx0, ry0 = max(0, int(cx - side)), max(0, int(cy - side))
        rx1, ry1 = min(w, int(cx + side) + 1), min(h, int(cy + side) + 1)
        if rx1 - rx0 < 8 or ry1 - ry0 < 8:
            return None
        scale = 120.0 / side
        roi = gray[ry0:ry1, rx0:rx1]
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        roi = cv2.resize(roi, (max(1, round(roi.shape[1] * scale)), max(1, round(roi.shape[0] * scale))),
                         interpolation=interp)
        found = self._detect_raw(roi) / scale + np.array([rx0, ry0, rx0, ry0], np.float32)
        best = None
        for cand in found:
            overlap = box_iou(cand, box)
            if overlap > 0.3 and (best is None or overlap > best[0]):
                best = (overlap, cand)
        return None if best is None else best[1].astype(np.float32)

    # internals ---------------------------------------------------------------------------
    def _detect_raw(self, gray: np.ndarray) -> np.ndarray:
        """(F, 4) boxes in ``gray``'s pixels; confident ones (score ≥ 0) if any, else the
        best below-threshold one."""
        if self.use_cnn:
            found = self._detector(gray, 0)
            boxes = [(d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()) for d in found]
            return np.array(boxes, np.float32).reshape(-1, 4)
        rects, scores, _kinds = self._detector.run(gray, 0, self.threshold)
        if not rects:
            return np.zeros((0, 4), np.float32)
        boxes = np.array([(r.left(), r.top(), r.right(), r.bottom()) for r in rects], np.float32)
        scores = np.asarray(scores, np.float32)
        confident = scores >= 0
        if confident.any():
            return boxes[confident]
        return boxes[[int(np.argmax(scores))]]


# -- face_alignment (optional) ---------------------------------------------------------------

class FaceAlignmentDetector:
    """Adapter for the ``face_alignment`` package (FAN landmarks, S3FD detector), the
    landmark model Zakharov et al. used. Optional: needs the package and its weights in the
    torch hub cache (they are downloaded on first use, which needs internet access)."""

    accepts_gray = False

    def __init__(self, device: str = "cpu"):
        if importlib.util.find_spec("face_alignment") is None:
            raise TalkingHeadError("face_alignment is not installed (pip install face-alignment); "
                                   "use --detector dlib")
        import torch

        hub = Path(torch.hub.get_dir()) / "checkpoints"
        have = [p.name for p in hub.glob("*")] if hub.is_dir() else []
        missing = [w for w in ("2DFAN4", "s3fd") if not any(n.startswith(w) for n in have)]
        if missing:
            raise TalkingHeadError(f"{hub}: face_alignment weights missing ({', '.join(missing)}); "
                                   "run face_alignment once with internet access, or use --detector dlib")
        import face_alignment

        kind = getattr(face_alignment.LandmarksType, "TWO_D", None) or getattr(face_alignment.LandmarksType, "_2D")
        self._fa = face_alignment.FaceAlignment(kind, device=device, face_detector="sfd")
        self.name = "face_alignment"

    def detect_faces(self, image: np.ndarray) -> np.ndarray:
        rgb = _as_rgb(image)
        found = self._fa.face_detector.detect_from_image(rgb[..., ::-1].copy())  # S3FD wants BGR
        boxes = np.array([d[:4] for d in found], np.float32).reshape(-1, 4)
        return _sorted_by_area(boxes)

    def landmarks_in_box(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        rgb = _as_rgb(image)
        result = self._fa.get_landmarks(rgb, detected_faces=[np.asarray(box, np.float32)])
        if not result:
            return np.full((68, 2), np.nan, np.float32)
        return np.asarray(result[0][:, :2], np.float32)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image


DETECTORS = ("dlib", "dlib-cnn", "face_alignment")


def get_detector(name: str = "dlib") -> LandmarkDetector:
    """A detector by name: ``dlib`` (HOG, fast), ``dlib-cnn`` (MMOD CNN: more robust to
    pose, ~20× slower on CPU) or ``face_alignment`` (FAN, if installed with its weights)."""
    key = name.lower().replace("-", "_")
    if key == "dlib":
        return DlibLandmarkDetector()
    if key in ("dlib_cnn", "cnn"):
        return DlibLandmarkDetector(use_cnn=True)
    if key in ("face_alignment", "fan"):
        return FaceAlignmentDetector()
    raise TalkingHeadError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")


# -- single images ----------------------------------------------------------------------------

def detect_largest_face(image: np.ndarray, detector: LandmarkDetector) -> tuple[np.ndarray, np.ndarray, int]:
    """Landmarks of the largest face in ``image`` (H, W, 3).

    Returns (landmarks (68, 2) float32, box (4,) x0 y0 x1 y1, number of faces found); callers
    report "several faces, picked the largest" when the count is above one.
    Raises NoFaceError("no face found") when there is none.
    """
    boxes = detector.detect_faces(image)
    if len(boxes) == 0:
        raise NoFaceError("no face found")
    box = boxes[0]
    return detector.landmarks_in_box(image, box).astype(np.float32), box.astype(np.float32), len(boxes)


# -- geometry helpers -------------------------------------------------------------------------

def _sorted_by_area(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return boxes[np.argsort(-area, kind="stable")]


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (4,) x0 y0 x1 y1 boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def landmark_extent(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """(centre (2,), extent) of the landmarks' bounding box; extent = max(width, height)."""
    lo, hi = landmarks.min(axis=0), landmarks.max(axis=0)
    return (lo + hi) / 2, float(max(hi[0] - lo[0], hi[1] - lo[1]))


def detector_box_from_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """The (4,) box dlib's detector would most likely give for a face with these (68, 2)
    landmarks (see ``_HOG_BOX_*``): dlib's average framing, for landmarks without a detector box."""
    centre, extent = landmark_extent(landmarks)
    centre = centre + _HOG_BOX_OFFSET * extent
    half = _HOG_BOX_SCALE * extent / 2
    return np.array([centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half], np.float32)


def landmark_refit_error(images: np.ndarray, landmarks: np.ndarray, detector: LandmarkDetector) -> np.ndarray:
    """How far the shape predictor, run again in the box the landmarks imply, lands from them.

    A near-profile is where dlib's frontal shape model guesses: it puts the hidden eye and cheek
    on the nose line, and a second fit from a slightly different box lands elsewhere (0.17–0.75
    inter-ocular distances, against ~0.01 for a visible face). Such landmarks claim a pose the
    image does not show.

    Args:
        images: (K, S, S, 3) uint8 RGB. landmarks: (K, 68, 2) in their pixels.
    Returns:
        (K,) mean point distance ÷ the landmarks' outer-eye-corner distance; 0 for a shot
        without finite landmarks (nothing to compare).
    """
    def refit_distance(image: np.ndarray, marks: np.ndarray, box: np.ndarray) -> float:
        return float(np.linalg.norm(detector.landmarks_in_box(image, box) - marks, axis=-1).mean())

    return _per_shot_over_eye_distance(images, landmarks, refit_distance)


#: Boxes the shape predictor is refitted in by :func:`mouth_fit_spread`: the landmarks' box
#: moved by ±6 % of its side in x and y (and not at all) and scaled by 0.94 or 1.06 — the
#: jitter a detector's box has between frames.
MOUTH_REFIT_BOXES = tuple((dx, dy, s) for dx in (-0.06, 0.0, 0.06) for dy in (-0.06, 0.0, 0.06) for s in (0.94, 1.06))


def mouth_fit_spread(images: np.ndarray, landmarks: np.ndarray, detector: LandmarkDetector) -> np.ndarray:
    """How loosely the shape predictor holds the mouth: its 20 mouth points refitted in the 18
    :data:`MOUTH_REFIT_BOXES` around the landmarks' box, mean distance from their mean.

    Where the mouth shows, the points are anchored to its edges and barely move (0.005–0.01
    inter-ocular distances); a hand over the mouth leaves them to the model's prior, and a box's
    shift moves them (0.014–0.064 on a clip whose speaker covers her mouth). A turned head and a
    soft video loosen them too, which :meth:`~talkinghead.models.guide.WarpGuide.hidden_mouth_penalty` allows for.

    Args:
        images: (K, S, S, 3) uint8 RGB. landmarks: (K, 68, 2) in their pixels.
    Returns:
        (K,) ÷ the landmarks' outer-eye-corner distance; 0 for a shot without finite landmarks.
    """
    def mouth_spread(image: np.ndarray, marks: np.ndarray, box: np.ndarray) -> float:
        centre, side = (box[:2] + box[2:]) / 2, float(box[2] - box[0])
        mouths = []
        for dx, dy, scale in MOUTH_REFIT_BOXES:
            moved = centre + np.array([dx, dy], np.float32) * side
            half = side * scale / 2
            mouths.append(detector.landmarks_in_box(image, np.concatenate([moved - half, moved + half]))[48:68])
        mouths = np.stack(mouths)  # (18, 20, 2)
        return float(np.linalg.norm(mouths - mouths.mean(0), axis=-1).mean())

    return _per_shot_over_eye_distance(images, landmarks, mouth_spread)


def _per_shot_over_eye_distance(images: np.ndarray, landmarks: np.ndarray, measure) -> np.ndarray:
    """(K,) ``measure(image, landmarks (68, 2), detector box (4,))`` of each shot ÷ its
    outer-eye-corner distance; 0 for a shot without finite landmarks (nothing to measure)."""
    out = np.zeros(len(images), np.float32)
    for i, (image, marks) in enumerate(zip(images, np.asarray(landmarks, np.float32))):
        iod = float(np.linalg.norm(marks[45] - marks[36]))
        if not np.isfinite(marks).all() or iod <= 0:
            continue
        out[i] = measure(image, marks, detector_box_from_landmarks(marks)) / iod
    return out


def nose_position(landmarks: np.ndarray) -> np.ndarray | float:
    """Where the nose tip sits between the jaw's ends ((..., 68, 2) 68-point landmarks → (...),
    a float for one face): 0.5 for a frontal face, towards 0 or 1 as the head turns, outside
    [0, 1] in profile; NaN where the jaw has no width."""
    marks = np.asarray(landmarks, np.float64)
    jaw_left, jaw_right, nose = marks[..., 0, 0], marks[..., 16, 0], marks[..., 30, 0]
    width = jaw_right - jaw_left
    with np.errstate(divide="ignore", invalid="ignore"):
        position = np.where(np.abs(width) > 1e-6, (nose - jaw_left) / width, np.nan)
    return float(position) if position.ndim == 0 else position


# -- tracking ---------------------------------------------------------------------------------

def track_landmarks(frames: Iterable[np.ndarray], detector: LandmarkDetector, redetect_every: int = 12,
                    progress: bool = False, total: int | None = None,
                    fallback: LandmarkDetector | None = None,
                    on_progress=None) -> tuple[np.ndarray, np.ndarray, dict]:
    """:func:`talkinghead.data.tracking.track_landmarks` (where the tracker lives), kept here
    for callers that import it from this module."""
    from talkinghead.data.tracking import track_landmarks as track

    return track(frames, detector, redetect_every, progress, total, fallback, on_progress)


def detect_every_frame(frames: Iterable[np.ndarray], detector: LandmarkDetector) -> tuple[np.ndarray, np.ndarray]:
    """The slow reference: detect + predict on every frame. (T, 68, 2), (T,)."""
    out = []
    for frame in frames:
        try:
            points, _box, _n = detect_largest_face(frame, detector)
        except NoFaceError:
            points = np.full((68, 2), np.nan, np.float32)
        out.append(points)
    landmarks = np.stack(out) if out else np.zeros((0, 68, 2), np.float32)
    return landmarks, np.isfinite(landmarks).all(axis=(1, 2))
