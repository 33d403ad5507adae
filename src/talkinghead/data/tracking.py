"""Face tracking through video: :class:`FaceTracker` (one frame in, landmarks and a status out),
used by ``prepare``, ``animate`` (:func:`track_landmarks`) and ``live`` alike; and the check of a
track against what a fresh detection sees (:func:`check_track`).

A track is only as good as its agreement with an independent look at the same frame: dlib's
detector over the whole frame (HOG; stronger detectors where HOG finds nothing) and the shape
predictor in the detector's own box. :func:`check_track` makes that comparison on sampled
frames; the tracking benchmark and ``talkinghead prepare`` (each clip's row in the index)
report it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from talkinghead.data.landmarks import (LandmarkDetector, box_iou, detector_box_from_landmarks, landmark_extent,
                                        to_gray)
from talkinghead.progress import ProgressBar, ProgressCallback

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
                    fallbacks: Iterable[LandmarkDetector] = ()) -> np.ndarray | None:
    """(68, 2) landmarks of the largest face a detection over the whole (H, W, 3) RGB frame
    finds (the ``fallbacks`` in turn where ``detector`` finds none), or None.

    The box is the detector's again in a window around the face where it can (``verify_box``):
    a face under ~90 px in the downscaled frame (a small face in a 1080×1920 frame) gets a box
    up to half again too large there, and the predictor stretches the face to fill it.
    """
    image = to_gray(frame) if getattr(detector, "accepts_gray", False) else frame
    boxes = detector.detect_faces(image)
    for fallback in fallbacks:
        if len(boxes):
            break
        boxes = fallback.detect_faces(image if getattr(fallback, "accepts_gray", False) else frame)
    if len(boxes) == 0:
        return None
    verify = getattr(detector, "verify_box", None)
    refined = verify(image, boxes[0]) if verify is not None else None
    return detector.landmarks_in_box(image, boxes[0] if refined is None else refined).astype(np.float32)


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
                fallbacks: Iterable[LandmarkDetector] = ()) -> TrackCheck:
    """Compare a track's (T, 68, 2) ``landmarks`` (NaN where lost) with a fresh detection
    (:func:`fresh_landmarks`) on each ``(t, frame)`` of ``frames`` (the sampled frames,
    (H, W, 3) RGB)."""
    check = TrackCheck()
    fallbacks = list(fallbacks)
    for t, frame in frames:
        check.add(t, landmarks[t], fresh_landmarks(frame, detector, fallbacks))
    return check


# -- the tracker ------------------------------------------------------------------------------

#: What the tracker did with a frame. ``tracked``: the shape predictor in the box the previous
#: landmarks imply, no detector run; ``verified``: the detector found the face in this frame
#: and the landmarks are the predictor's in the detector's box (a first detection, or a
#: periodic check the track passed); ``redetected``: the track failed a check (or disagreed
#: with the detector's own fit) and a detection found the face again; ``held``: nothing
#: trustworthy in this frame, a face was seen less than ``hold_frames`` frames ago (the caller
#: holds the last good pose); ``lost``: no face for longer, or none yet.
STATUSES = ("tracked", "verified", "redetected", "held", "lost")


@dataclass
class TrackedFrame:
    """One frame's result from :class:`FaceTracker`."""

    landmarks: np.ndarray | None  # (68, 2) float32 in frame pixels; None when held or lost
    status: str  # one of STATUSES
    box: np.ndarray | None = None  # (4,) x0 y0 x1 y1 the landmarks were fitted in

    @property
    def confirmed(self) -> bool:
        """Whether a detector found the face in this frame."""
        return self.status in ("verified", "redetected")


#: The points that place the predictor's box: brows, nose and eyes, which an opening mouth or a
#: moving jaw does not move.
_BOX_POINTS = slice(17, 48)
#: A tracked shape is rejected (and the face re-detected) when the box it implies is outside
#: this range of the box it was fitted in (the predictor collapsed or blew up) ...
_SPREAD_RANGE = (0.6, 1.6)
#: ... when that box's centre is off the fitting box's centre by more than this fraction of
#: its side ...
_MAX_CENTRE_OFFSET = 0.3
#: ... when the landmarks moved on average more than this fraction of the face extent since
#: the previous frame (a head turn at 25 fps moves them ~1–5 %; a jump means the predictor
#: latched onto something else) ...
_MAX_JUMP = 0.2
#: ... or when the face size drifted more than this factor from the last detector box (the
#: per-frame checks cannot see a slow collapse of the shape, e.g. on a profile view).
_MAX_SCALE_DRIFT = 1.3
#: Detection overlapping the lost track's box by more than this IoU is the same person.
_SAME_FACE_IOU = 0.3
#: A detected box inside the face lost less than this many frames ago, under this fraction of
#: its side, is part of that face (see FaceTracker._faces).
_PART_MEMORY = 50
_PART_SIZE = 0.5


def _motion(landmarks: np.ndarray, previous: np.ndarray) -> float:
    """Mean point displacement between two (68, 2) landmark sets ÷ the face's extent."""
    return float(np.linalg.norm(landmarks - previous, axis=1).mean()) / max(landmark_extent(previous)[1], 1e-6)


def _placement(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """(centre (2,), size) of the (68, 2) landmarks' brows, eyes and nose: mean and RMS radius."""
    points = landmarks[_BOX_POINTS].astype(np.float64)
    centre = points.mean(axis=0)
    return centre, float(np.sqrt(((points - centre) ** 2).sum(axis=1).mean()))


class FaceTracker:
    """68-point landmarks frame by frame, detecting only when needed; one instance per video
    or camera (it keeps the track's state). ``prepare``, ``animate`` and ``live`` all use it.

    The shape predictor (~2 ms) runs in a box placed by the previous frame's landmarks. Where
    that box sits relative to the landmarks is taken from the detector's own box at the last
    detection, not from a fixed rule: on a turned head a fixed rule puts the box towards the
    ear, the predictor follows it and the track slides off the face while every frame still
    looks like a face. Each tracked frame is checked (spread and offset against its box, jump
    from the previous frame, drift of the face size). Every ``verify_every`` frames, and on any
    frame where the landmarks moved more than ``verify_motion`` of the face's extent (a fast
    move, where a fit lags behind the face), the detector looks again in a window around the
    face and the predictor refits in the detector's box: that fit replaces the track
    (``redetected`` when the two disagree by more than ``agree`` inter-ocular distances). A
    failed check, or no face, means a detection over the whole frame, then the ``fallbacks``
    (stronger, slower detectors) once per loss. While the face stays lost, detection is
    retried with a growing gap of up to ``max_retry_gap`` frames (0: every frame, for live).

    Args:
        detector: a :class:`~talkinghead.data.landmarks.LandmarkDetector`.
        fallbacks: detectors tried in order where ``detector`` finds no face right after a
            track ended (see :func:`stronger_detectors`).
        verify_every: frames between the detector's checks of a running track.
        verify_motion: landmark motion (mean displacement ÷ face extent) that triggers a check.
        agree: largest disagreement (inter-ocular distances) between the track and the
            detector's fit that still counts as ``verified``.
        hold_frames: lost frames reported as ``held`` before ``lost``.
        max_retry_gap: most frames skipped between detections while the face is lost.
    """

    def __init__(self, detector: LandmarkDetector, fallbacks: Iterable[LandmarkDetector] = (),
                 verify_every: int = 12, verify_motion: float = 0.05, agree: float = 0.1, hold_frames: int = 3,
                 max_retry_gap: int = 7):
        self.verify_motion = float(verify_motion)
        self.max_retry_gap = int(max_retry_gap)
        self.detector = detector
        self.fallbacks = [f for f in fallbacks if f is not None]
        self.verify_every = max(1, int(verify_every))
        self.agree = float(agree)
        self.hold_frames = int(hold_frames)
        self._gray = getattr(detector, "accepts_gray", False)
        self.stats = self.new_stats()
        self.reset()

    @staticmethod
    def new_stats() -> dict:
        """Counters: frames by status, detections, verifications, rejected checks by reason,
        seconds detecting / predicting, most faces in one detection, fallback runs / finds."""
        return {"frames": 0, "valid": 0, **{s: 0 for s in STATUSES}, "detections": 0, "verifications": 0,
                "disagreed": 0, "rejected": {}, "detect_s": 0.0, "predict_s": 0.0, "faces": 0,
                "fallback_detections": 0, "fallback_found": 0}

    def reset(self) -> None:
        """Forget the track (a new video); the counters are kept."""
        self._previous: np.ndarray | None = None  # landmarks of the last frame with a face
        self._face_box: np.ndarray | None = None  # the box they were fitted in
        self._relation: tuple[np.ndarray, float] | None = None  # detector box relative to _placement
        self._anchor_side = 0.0  # side of the last detector box
        self._since_verified = 0
        self._lost_run = 0  # consecutive frames without a face
        self._next_detection = 0  # frame number of the next detection attempt while lost
        self._seen_face = False
        self._t = -1

    # the step --------------------------------------------------------------------------------
    def __call__(self, frame: np.ndarray) -> TrackedFrame:
        """(H, W, 3) uint8 RGB (or (H, W) gray) frame → its :class:`TrackedFrame`."""
        self._t += 1
        image = to_gray(frame) if self._gray else frame
        result = self._follow(image) if self._previous is not None else None
        had_track = self._previous is not None
        attempted = result is None and (had_track or self._t >= self._next_detection)
        if attempted:
            result = self._detect(image, frame, had_track)
        if result is None:
            self._previous = None
            self._lost_run += 1
            if attempted:  # back off: every frame for 3 lost frames, then gaps growing to max_retry_gap
                self._next_detection = self._t + 1 + min(self._lost_run // 4, self.max_retry_gap)
            held = self._seen_face and self._lost_run <= self.hold_frames
            result = TrackedFrame(None, "held" if held else "lost")
        else:
            self._previous = result.landmarks
            self._face_box = result.box
            self._lost_run = 0
            self._seen_face = True
            self.stats["valid"] += 1
        self.stats["frames"] += 1
        self.stats[result.status] += 1
        return result

    def _follow(self, image: np.ndarray) -> TrackedFrame | None:
        """The track continued into this frame, checked; None when a check fails."""
        box = self.box_for(self._previous)
        candidate = self._predict(image, box)
        reason = self._check(candidate, box)
        # A fast move is where a fit lags behind the face (and still looks like one): check it now.
        fast = _motion(candidate, self._previous) > self.verify_motion
        if reason is None and (fast or self._since_verified + 1 >= self.verify_every):
            return self._verify(image, candidate)
        if reason is not None:
            self.stats["rejected"][reason] = self.stats["rejected"].get(reason, 0) + 1
            return None
        self._since_verified += 1
        return TrackedFrame(candidate, "tracked", box)

    def _verify(self, image: np.ndarray, candidate: np.ndarray) -> TrackedFrame | None:
        """The detector's look at the track: its box in a window around the face, the
        predictor's fit in that box, compared with the track."""
        self.stats["verifications"] += 1
        verify = getattr(self.detector, "verify_box", None)
        if verify is None:
            return None  # no cheap check: a full detection follows
        start = time.perf_counter()
        anchor = verify(image, self.box_for(candidate))
        self.stats["detect_s"] += time.perf_counter() - start
        if anchor is None:
            self.stats["rejected"]["verify"] = self.stats["rejected"].get("verify", 0) + 1
            return None
        fitted = self._anchor(image, anchor)
        if landmark_error(candidate, fitted) > self.agree:
            self.stats["disagreed"] += 1
            return TrackedFrame(fitted, "redetected", anchor)
        return TrackedFrame(fitted, "verified", anchor)

    def _detect(self, image: np.ndarray, frame: np.ndarray, had_track: bool) -> TrackedFrame | None:
        """A detection over the whole frame (then the fallbacks, once per loss)."""
        start = time.perf_counter()
        boxes = self._faces(self.detector.detect_faces(image))
        self.stats["detections"] += 1
        if len(boxes) == 0 and self._lost_run == 0:
            for fallback in self.fallbacks:
                self.stats["fallback_detections"] += 1
                boxes = self._faces(fallback.detect_faces(image if getattr(fallback, "accepts_gray", False) else frame))
                if len(boxes):
                    self.stats["fallback_found"] += 1
                    break
        self.stats["detect_s"] += time.perf_counter() - start
        self.stats["faces"] = max(self.stats["faces"], len(boxes))
        if len(boxes) == 0:
            return None
        box = boxes[0]
        if self._previous is not None:  # keep following the same person if they are still there
            old_box = self.box_for(self._previous)
            overlaps = [box_iou(b, old_box) for b in boxes]
            if max(overlaps) > _SAME_FACE_IOU:
                box = boxes[int(np.argmax(overlaps))]
        return TrackedFrame(self._anchor(image, box), "redetected" if had_track or self._lost_run else "verified", box)

    def _faces(self, boxes: np.ndarray) -> np.ndarray:
        """Detected (F, 4) boxes less those that are part of the face just lost: a box inside
        its box at under half its size is a chin or an eye that HOG took for a face (a turned
        head, where the face itself is no longer found)."""
        if self._face_box is None or self._lost_run > _PART_MEMORY or len(boxes) == 0:
            return boxes
        face = self._face_box
        side = face[2] - face[0]
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        inside = ((centres >= face[:2]) & (centres <= face[2:])).all(axis=1)
        return boxes[~(inside & (boxes[:, 2] - boxes[:, 0] < _PART_SIZE * side))]

    # geometry ---------------------------------------------------------------------------------
    def box_for(self, landmarks: np.ndarray) -> np.ndarray:
        """The (4,) box the detector would give for these (68, 2) landmarks, as it did at the
        last detection on this track (dlib's average framing before the first one)."""
        if self._relation is None:
            return detector_box_from_landmarks(landmarks)
        offset, side = self._relation
        centre, size = _placement(landmarks)
        centre = centre + offset * size
        half = side * size / 2
        return np.array([centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half], np.float32)

    def _anchor(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        """The predictor's fit in the detector's ``box``; the track's box is placed relative to
        the landmarks as this box is from now on."""
        landmarks = self._predict(image, box)
        centre, size = _placement(landmarks)
        if np.isfinite(landmarks).all() and size > 0:
            box_centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
            self._relation = ((box_centre - centre) / size, float(box[2] - box[0]) / size)
        self._anchor_side = float(box[2] - box[0])
        self._since_verified = 0
        return landmarks

    def _predict(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        landmarks = self.detector.landmarks_in_box(image, box).astype(np.float32)
        self.stats["predict_s"] += time.perf_counter() - start
        return landmarks

    def _check(self, points: np.ndarray, box: np.ndarray) -> str | None:
        """None if ``points`` (68, 2), fitted in ``box``, look like the continued track, else
        the reason."""
        if not np.isfinite(points).all():
            return "lost"
        implied = self.box_for(points)
        side = float(box[2] - box[0])
        implied_side = float(implied[2] - implied[0])
        if self._anchor_side and not (1 / _MAX_SCALE_DRIFT <= implied_side / self._anchor_side <= _MAX_SCALE_DRIFT):
            return "scale"
        if not (_SPREAD_RANGE[0] <= implied_side / max(side, 1e-6) <= _SPREAD_RANGE[1]):
            return "spread"
        if np.abs((implied[:2] + implied[2:]) / 2 - (box[:2] + box[2:]) / 2).max() > _MAX_CENTRE_OFFSET * side:
            return "offset"
        if _motion(points, self._previous) > _MAX_JUMP:
            return "jump"
        return None


def stronger_detectors(detector: LandmarkDetector, cnn: bool = True) -> list[LandmarkDetector]:
    """What to try where dlib's HOG ``detector`` finds no face: HOG on a frame twice as large
    (small faces; ~4× the cost), then dlib's CNN (turned and expressive faces; ~50× the cost,
    left out with ``cnn=False``). None for other back ends. The larger HOG keeps only confident
    boxes: below dlib's threshold, at that scale, it takes a chin or an eye for a small face."""
    from talkinghead.data.landmarks import DlibLandmarkDetector, get_detector

    if not isinstance(detector, DlibLandmarkDetector) or detector.use_cnn:
        return []
    larger = DlibLandmarkDetector(detect_size=2 * detector.detect_size, threshold=0.0)
    return [larger, get_detector("dlib-cnn")] if cnn else [larger]


def track_landmarks(
    frames: Iterable[np.ndarray],
    detector: LandmarkDetector,
    redetect_every: int = 12,
    progress: bool = False,
    total: int | None = None,
    fallback: LandmarkDetector | None = None,
    on_progress: ProgressCallback | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """68 landmarks for every frame of a video with a :class:`FaceTracker`.

    Args:
        frames: iterable of (H, W, 3) uint8 RGB frames (or (H, W) gray).
        detector: a :class:`~talkinghead.data.landmarks.LandmarkDetector`.
        redetect_every: frames between the detector's checks of a running track.
        progress: show a tqdm bar over frames.
        total: number of frames, for the progress bar.
        fallback: a slower, stronger detector (dlib's CNN) tried when detection right after a
            lost track finds nothing (once per loss, so its cost stays bounded), after HOG on a
            frame twice as large for a dlib ``detector``.
        on_progress: called after each frame (:mod:`talkinghead.progress`); may raise to stop.

    Returns:
        landmarks (T, 68, 2) float32 in frame pixels, NaN where held or lost;
        valid (T,) bool;
        stats dict (:meth:`FaceTracker.new_stats`): frames by status, detections,
        verifications, rejected checks by reason, seconds detecting / predicting, most faces
        in one detection, fallback runs and finds.
    """
    fallbacks = stronger_detectors(detector, cnn=False) + ([fallback] if fallback is not None else [])
    tracker = FaceTracker(detector, fallbacks, verify_every=redetect_every)
    nan = np.full((68, 2), np.nan, np.float32)
    out = []
    bar = ProgressBar(frames, "landmarks", show=progress, on_progress=on_progress, total=total, unit="frame",
                      leave=False)
    for frame in bar:
        found = tracker(frame).landmarks
        out.append(nan if found is None else found)
    bar.close()
    landmarks = np.stack(out) if out else np.zeros((0, 68, 2), np.float32)
    return landmarks, np.isfinite(landmarks).all(axis=(1, 2)), tracker.stats


def status_counts(stats: dict) -> dict:
    """The frames-by-status part of a tracker's ``stats`` (JSON-ready): frames, tracked,
    verified, redetected, held, lost."""
    return {key: int(stats.get(key, 0)) for key in ("frames",) + STATUSES}


def describe_tracking(stats: dict) -> str:
    """One line for users: how many frames the tracker re-detected, held and lost."""
    counts = status_counts(stats)
    return (f"tracking: {counts['frames']} frames, {counts['redetected']} re-detected, "
            f"{counts['held']} held, {counts['lost']} lost")
