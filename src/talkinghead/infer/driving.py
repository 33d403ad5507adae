"""Driving an avatar: landmarks from a video or a .npy track, adapted to the avatar's face,
rendered, composed (side by side, pasted back) and written as an mp4 with the driver's audio."""

from __future__ import annotations

import logging
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from talkinghead.data.sketch import landmarks_to_sketch
from talkinghead.errors import TalkingHeadError
from talkinghead.progress import ProgressCallback, report
from talkinghead.infer.reenact import adapt_landmarks

log = logging.getLogger(__name__)


@dataclass
class DrivingTrack:
    """Landmarks of a driving sequence, in the driver's own pixel frame."""

    landmarks: np.ndarray  # (T, 68, 2), lost frames filled with the last good landmarks
    fps: float
    lost: int  # frames where the face was lost (held)
    video: Path | None = None  # the driving video, for side-by-side and audio
    notes: list[str] = field(default_factory=list)  # what the user should know (damaged or lost frames)
    #: Frames by tracking status (:func:`talkinghead.data.tracking.status_counts`: frames,
    #: tracked, verified, redetected, held, lost) when the track came from a video; empty otherwise.
    tracking: dict = field(default_factory=dict)


def hold_lost_frames(landmarks: np.ndarray) -> tuple[np.ndarray, int]:
    """Fill frames with NaN landmarks with the last good ones (the first good one for a
    leading gap). Returns the filled (T, 68, 2) array and how many frames were filled."""
    landmarks = np.array(landmarks, np.float32, copy=True)
    good = np.isfinite(landmarks).all(axis=(1, 2))
    if not good.any():
        raise TalkingHeadError("no face found in any driving frame")
    last = landmarks[np.flatnonzero(good)[0]]
    for t in range(len(landmarks)):
        if good[t]:
            last = landmarks[t]
        else:
            landmarks[t] = last
    return landmarks, int((~good).sum())


def track_from_video(path: str | os.PathLike, detector=None, progress: bool = True,
                     on_progress: ProgressCallback | None = None) -> DrivingTrack:
    """Detect and track 68 landmarks through a driving video (faces lost in some frames are held).
    What the user should hear about (undecodable frames, lost faces, several people) is logged
    and kept in the track's ``notes``; ``tracking`` counts frames by tracking status."""
    from talkinghead.data.landmarks import get_detector
    from talkinghead.data.tracking import describe_tracking, status_counts, track_landmarks
    from talkinghead.data.video import iter_frames, probe_video

    path = Path(path)
    info = probe_video(path)
    detector = detector or get_detector("dlib")
    # Where HOG cannot re-find a face after losing the track, dlib's CNN detector tries once.
    fallback = get_detector("dlib-cnn") if getattr(detector, "name", "") == "dlib" else None
    decoded: dict = {}
    landmarks, valid, stats = track_landmarks(iter_frames(path, report=decoded), detector, progress=progress,
                                              total=info.frames or None, fallback=fallback,
                                              on_progress=on_progress)
    if stats.get("fallback_found"):
        log.info("%s: dlib's CNN detector re-found the face %d time(s) where HOG found none",
                 path, stats["fallback_found"])
    if not np.asarray(valid).any():
        raise TalkingHeadError(f"{path}: no face found in any frame of the driving video")
    filled, lost = hold_lost_frames(np.where(np.asarray(valid)[:, None, None], landmarks, np.nan))
    notes = []
    if decoded.get("lost"):  # iter_frames has logged it
        notes.append(f"{path.name}: {decoded['lost']} damaged frame(s) could not be decoded and were skipped "
                     f"({len(filled)} used)")
    if lost:
        log.warning("%s: face lost in %d of %d frames; held the last good landmarks", path, lost, len(filled))
        notes.append(f"{path.name}: face lost in {lost} of {len(filled)} frames; held the last good pose")
    if stats.get("faces", 0) > 1:
        notes.append(f"{path.name}: {stats['faces']} faces in view; followed one of them")
    log.info("%s: %s", path, describe_tracking(stats))
    return DrivingTrack(filled, info.fps, lost, path, notes, status_counts(stats))


def track_from_npy(path: str | os.PathLike, fps: float = 25.0) -> DrivingTrack:
    """A (T, 68, 2) landmark track saved with numpy (puppeteering). Never unpickled."""
    from talkinghead.fileio import load_npy_array

    landmarks = load_npy_array(path, "landmark track", (68, 2))
    filled, lost = hold_lost_frames(landmarks)
    return DrivingTrack(filled, fps, lost, None)


def paste_back(image: np.ndarray, crop: np.ndarray, box: np.ndarray, feather: float = 0.12) -> np.ndarray:
    """Blend a rendered (S, S, 3) crop back into the full image it was cut from.

    ``box`` is the crop square (cx, cy, side) in image pixels; the seam is hidden by an
    elliptical mask feathered over ``feather`` of the crop side.
    """
    from talkinghead.data.crop import crop_matrix

    size = crop.shape[0]
    h, w = image.shape[:2]
    inverse = cv2.invertAffineTransform(crop_matrix(box, size))
    warped = cv2.warpAffine(crop, inverse, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    mask = np.zeros((size, size), np.float32)
    cv2.ellipse(mask, (size // 2, size // 2), (int(size * 0.42), int(size * 0.47)), 0, 0, 360, 1.0, -1)
    k = max(3, int(size * feather) | 1)
    mask = cv2.GaussianBlur(mask, (k, k), 0)
    mask = cv2.warpAffine(mask, inverse, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)[..., None]
    return (warped * mask + image * (1 - mask)).round().astype(np.uint8)


def _fit_height(image: np.ndarray, height: int) -> np.ndarray:
    h, w = image.shape[:2]
    return cv2.resize(image, (max(2, round(w * height / h)), height), interpolation=cv2.INTER_AREA)


def smoothed(track: DrivingTrack) -> DrivingTrack:
    """The track with its landmarks One-Euro filtered (:mod:`talkinghead.infer.smoothing`):
    detector jitter of a still face is removed, fast motion passes with little lag."""
    from talkinghead.infer.smoothing import smooth_landmarks

    return dataclasses.replace(track, landmarks=smooth_landmarks(track.landmarks, track.fps))


def drive(avatar, track: DrivingTrack, mode: str = "relative", reference: str | int = "neutral",
          smooth: bool = True, expression=None, size: int | None = None, batch_size: int = 16,
          progress: bool = True, on_progress: ProgressCallback | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The rendering half of :func:`animate_to_video`: the track smoothed (``smooth``), adapted
    to the avatar (``mode``, ``reference``), ``expression`` applied, rendered at ``size``.

    Returns:
        adapted (T, 68, 2) landmarks in the avatar's S-px crop coordinates, and the rendered
        (T, O, O, 3) uint8 frames.
    """
    if smooth:
        track = smoothed(track)
    adapted = adapt_landmarks(track.landmarks, avatar.landmarks, mode=mode, reference=reference)
    if expression is not None:
        from talkinghead.infer.expression import apply_expression

        adapted = apply_expression(adapted, expression)
    rendered = avatar.animate(adapted, batch_size=batch_size, progress=progress, consecutive=smooth,
                              on_progress=on_progress, size=size)
    return adapted, rendered


def paste_frame(avatar, crop: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """A rendered (O, O, 3) crop blended into the avatar's source photo inside the rendered and
    the source head (:func:`~talkinghead.infer.paste.paste_head`); ``landmarks`` (68, 2) are the
    rendered face's, in the avatar's S-px crop coordinates."""
    from talkinghead.infer.paste import paste_head

    scale = crop.shape[0] / avatar.size  # network crop pixels → output crop pixels
    return paste_head(avatar.source_image, crop, avatar.source_box, landmarks * scale,
                      avatar.reference_landmarks * scale, avatar.config.detail.paste_feather)


def animate_to_video(avatar, track: DrivingTrack, output: str | os.PathLike, mode: str = "relative",
                     reference: str | int = "neutral", side_by_side: bool = False, paste: bool = False,
                     batch_size: int = 16, fps: float | None = None, progress: bool = True,
                     smooth: bool = True, expression=None, on_progress: ProgressCallback | None = None,
                     size: int | None = None) -> dict:
    """Render ``avatar`` following ``track`` and write an H.264 mp4 (with the driver's audio).

    ``smooth``: One-Euro filter the driving landmarks first (see :func:`smoothed`) and cross-fade
    between shots over consecutive frames (``Avatar.animate(consecutive=True)``).
    ``expression``: an :class:`~talkinghead.infer.expression.Expression` applied to the adapted
    landmarks (``--eyes``, ``--lips``). ``on_progress`` receives rendering and writing steps.
    ``size``: the face's output size O (default ``avatar.output_size``, the source face's own
    resolution); ``paste`` blends it into the source photo inside the rendered and the source
    head (:func:`~talkinghead.infer.paste.paste_head`).
    Returns a summary dict (frames, fps, lost, output, size, tracking: the track's frames by
    tracking status, empty for a .npy track).
    """
    from talkinghead.data.video import iter_frames, write_video

    if paste and (avatar.source_image is None or avatar.source_box is None):
        raise TalkingHeadError("--paste-back needs an avatar made from images (it has no source image)")
    if batch_size < 1:
        raise TalkingHeadError(f"batch size {batch_size}: must be at least 1")
    if fps is not None and not (0 < fps <= 240):
        raise TalkingHeadError(f"fps {fps:g}: must be in (0, 240]")
    size = avatar.check_size(size)
    adapted, rendered = drive(avatar, track, mode, reference, smooth, expression, size, batch_size, progress,
                              on_progress)

    def frames():
        drivers = iter_frames(track.video) if (side_by_side and track.video is not None) else None
        for t, image in enumerate(rendered):
            report(on_progress, "writing", t, len(rendered))
            out = paste_frame(avatar, image, adapted[t]) if paste else image
            if side_by_side:
                height = out.shape[0]
                sketch = landmarks_to_sketch(adapted[t], avatar.size)
                panels = [_fit_height(sketch, height), out]
                if drivers is not None:
                    driver = next(drivers, None)
                    if driver is not None:
                        panels.insert(0, _fit_height(driver, height))
                out = np.concatenate(panels, axis=1)
            yield out

    rate = fps or track.fps
    count = write_video(output, frames(), rate, audio_from=str(track.video) if track.video else None)
    return {"frames": count, "fps": rate, "lost": track.lost, "output": str(output), "size": size,
            "tracking": dict(track.tracking)}
