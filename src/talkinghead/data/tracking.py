"""Checking a landmark track against what a fresh detection sees.

A track is only as good as its agreement with an independent look at the same frame: dlib's
detector over the whole frame (HOG; its CNN where HOG finds nothing) and the shape predictor in
the detector's own box. :func:`check_track` makes that comparison on sampled frames; the
tracking benchmark and ``talkinghead prepare`` (each clip's row in the index) report it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from talkinghead.data.landmarks import LandmarkDetector, to_gray

#: A tracked frame further than this from a fresh detection (mean point distance over the
#: inter-ocular distance) is on another part of the head, or on another face.
OFF_FACE = 0.3


def interocular_distance(landmarks: np.ndarray) -> float:
    """Distance between the outer eye corners (points 36 and 45) of (68, 2) landmarks."""
    return float(np.linalg.norm(landmarks[45] - landmarks[36]))


def landmark_error(landmarks: np.ndarray, reference: np.ndarray) -> float:
    """Mean point distance of (68, 2) ``landmarks`` from ``reference``, in the reference's
    inter-ocular distances."""
    return float(np.linalg.norm(landmarks - reference, axis=-1).mean()) / max(interocular_distance(reference), 1e-6)


def fresh_landmarks(frame: np.ndarray, detector: LandmarkDetector,
                    fallback: LandmarkDetector | None = None) -> np.ndarray | None:
    """(68, 2) landmarks of the largest face a detection over the whole (H, W, 3) RGB frame
    finds (``fallback``, e.g. dlib's CNN, where ``detector`` finds none), or None."""
    image = to_gray(frame) if getattr(detector, "accepts_gray", False) else frame
    boxes = detector.detect_faces(image)
    if len(boxes) == 0 and fallback is not None:
        boxes = fallback.detect_faces(frame)
    if len(boxes) == 0:
        return None
    return detector.landmarks_in_box(image, boxes[0]).astype(np.float32)


@dataclass
class TrackCheck:
    """A track compared with fresh detections on some of its frames.

    ``errors`` holds :func:`landmark_error` per sampled frame, NaN where the track or the
    detection has no face; ``lost`` marks frames the track marks lost although a detection
    finds a face, ``no_face`` those where the detection finds none.
    """

    frames: list = field(default_factory=list)  # sampled frame numbers
    errors: list = field(default_factory=list)
    lost: list = field(default_factory=list)
    no_face: list = field(default_factory=list)

    def add(self, t: int, tracked: np.ndarray | None, reference: np.ndarray | None) -> None:
        """Record frame ``t``: the track's (68, 2) landmarks (None or NaN when lost) and the
        fresh detection's (None when it found no face)."""
        has_track = tracked is not None and bool(np.isfinite(tracked).all())
        self.frames.append(int(t))
        self.no_face.append(reference is None)
        self.lost.append(reference is not None and not has_track)
        self.errors.append(landmark_error(tracked, reference) if has_track and reference is not None else np.nan)

    def extend(self, other: "TrackCheck") -> None:
        for name in ("frames", "errors", "lost", "no_face"):
            getattr(self, name).extend(getattr(other, name))

    @property
    def checked(self) -> np.ndarray:
        """Errors of the frames where both the track and the detection have a face."""
        errors = np.asarray(self.errors, np.float64)
        return errors[np.isfinite(errors)]

    def summary(self) -> dict:
        """JSON-ready figures: sampled, checked, median/max error, off (> :data:`OFF_FACE`),
        lost, no_face."""
        errors = self.checked
        return {"sampled": len(self.frames), "checked": int(errors.size),
                "median": round(float(np.median(errors)), 4) if errors.size else None,
                "max": round(float(errors.max()), 4) if errors.size else None,
                "off": int((errors > OFF_FACE).sum()), "lost": int(sum(self.lost)),
                "no_face": int(sum(self.no_face))}


def check_track(frames: Iterable[tuple[int, np.ndarray]], landmarks: np.ndarray, detector: LandmarkDetector,
                fallback: LandmarkDetector | None = None) -> TrackCheck:
    """Compare a track's (T, 68, 2) ``landmarks`` (NaN where lost) with a fresh detection on
    each ``(t, frame)`` of ``frames`` (the sampled frames, (H, W, 3) RGB)."""
    check = TrackCheck()
    for t, frame in frames:
        check.add(t, landmarks[t], fresh_landmarks(frame, detector, fallback))
    return check
