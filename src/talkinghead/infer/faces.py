"""Turning user inputs (photos, paintings, videos) into aligned face crops and landmarks,
exactly as ``talkinghead prepare`` crops training data, so G sees the framing it learned."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from talkinghead.data.crop import crop_square, landmarks_to_crop, square_box_from_landmarks
from talkinghead.data.landmarks import detect_largest_face, get_detector, nose_position
from talkinghead.data.video import iter_frames, read_image
from talkinghead.errors import NoFaceError, TalkingHeadError
from talkinghead.progress import ProgressBar, ProgressCallback

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = {".mp4", ".mov", ".avi", ".webm", ".mkv", ".m4v"}


@dataclass
class FaceCrops:
    crops: np.ndarray  # (K, S, S, 3) uint8
    landmarks: np.ndarray  # (K, 68, 2) in crop pixels
    source_image: np.ndarray  # first source image, full size (for paste-back)
    source_box: np.ndarray  # (cx, cy, side) of its crop
    notes: list[str] = field(default_factory=list)
    #: (K, H, H, 3) uint8: the same crops at up to ``max_size`` px (the first face's own
    #: resolution, never below S): the output-resolution detail layer warps these (:mod:`talkinghead.infer.detail`).
    crops_hi: np.ndarray | None = None


class EvenSample:
    """Keep ``count`` evenly spaced items of a stream of unknown length in O(count) memory.

    Items are kept at a stride that doubles whenever more than ``2 * count`` are held (every
    other one is dropped), so at the end the kept ones are evenly spaced over the whole
    stream; :meth:`picks` then takes ``count`` of them, spread from first to last.
    """

    def __init__(self, count: int):
        self.count = max(1, int(count))
        self.stride = 1
        self.kept: list[tuple[int, object]] = []  # (index in the stream, item)
        self.seen = 0

    def add(self, item) -> None:
        if self.seen % self.stride == 0:
            self.kept.append((self.seen, item))
            if len(self.kept) > 2 * self.count:
                self.kept = self.kept[::2]
                self.stride *= 2
        self.seen += 1

    def picks(self) -> list[tuple[int, object]]:
        if len(self.kept) <= self.count:
            return list(self.kept)
        idx = np.linspace(0, len(self.kept) - 1, self.count).round().astype(int)
        return [self.kept[i] for i in idx]


def _expand_sources(sources, shots: int | None) -> list[tuple[str, np.ndarray]]:
    """(label, image) pairs from image paths/arrays, or ``shots`` frames of one video/folder.

    A video is streamed: only about 2 × ``shots`` frames are held at any time, whatever its
    length (a few minutes of 1080p would not fit in memory)."""
    if isinstance(sources, (str, os.PathLike)):
        path = Path(sources)
        if path.is_dir() or path.suffix.lower() in VIDEO_EXTENSIONS:
            sample = EvenSample(shots or 8)
            for frame in iter_frames(path):
                sample.add(frame)
            return [(f"{path}#{i}", frame) for i, frame in sample.picks()]
        sources = [sources]
    out = []
    for i, src in enumerate(sources):
        if isinstance(src, np.ndarray):
            out.append((f"image[{i}]", src))
        else:
            out.append((str(src), read_image(src)))
    if shots is not None and len(out) > shots:
        out = out[:shots]
    return out


def _is_hog(detector) -> bool:
    return getattr(detector, "name", "") == "dlib"


def detect_with_fallback(image: np.ndarray, detector, label: str, notes: list[str]):
    """:func:`detect_largest_face` with ``detector``; where dlib's HOG finds nothing, dlib's CNN
    (MMOD) detector tries too: it finds faces HOG misses (expressive faces, glasses, big hair,
    tilted heads) at ~1 s an image on a CPU, which one source image can afford. Says which
    detector found the face. Raises NoFaceError when neither does."""
    try:
        return detect_largest_face(image, detector)
    except NoFaceError:
        if not _is_hog(detector):
            raise
    found = detect_largest_face(image, get_detector("dlib-cnn"))
    notes.append(f"{label}: face found by dlib's CNN detector (HOG found none)")
    log.info("%s: face found by dlib's CNN detector (HOG found none)", label)
    return found


#: A face narrower than this fraction of the model's crop size gets a low-resolution warning.
LOW_RESOLUTION_FRACTION = 0.5
#: A shot is "in profile" when its nose tip lies this close to (or beyond) either end of the
#: jaw line, as a fraction of the jaw's width: below it dlib has guessed the hidden side
#: (docs/experiments.md#calibrated-constants).
PROFILE_NOSE_MARGIN = 0.1


def high_resolution_size(side: float, size: int, max_size: int) -> int:
    """The side H of the high-resolution crops: the first face's own resolution (its crop
    square's side in source pixels, even), capped at ``max_size`` and never below ``size``: the
    default output size, so that the first shot needs no resampling."""
    return int(min(max(max_size, size), max(size, 2 * int(float(side) // 2))))


def sharp_crop(image: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """:func:`crop_square` for the high-resolution shots: the square cut at its own (pixel-aligned)
    size, an exact copy of the photo's pixels, then resized to ``size`` with Lanczos (area
    averaging when shrinking by more than 2): bilinear resampling by a factor near 1 blurs fine
    detail by up to half a pixel."""
    side = int(round(float(box[2])))
    if side == size or side >= 2 * size:
        return crop_square(image, box, size)
    import cv2

    native = crop_square(image, box, side)
    return cv2.resize(native, (size, size), interpolation=cv2.INTER_LANCZOS4 if size > side / 2 else cv2.INTER_AREA)


def pixel_aligned_box(box: np.ndarray) -> np.ndarray:
    """The crop square (cx, cy, side) moved by about a pixel so that its side is an even number
    of pixels (as video encoders want) and its edges lie on pixel edges: a crop at that side is
    then an exact copy of the photo's pixels, and pasting it back puts them exactly where they
    were (no resampling blur)."""
    side = max(2.0, 2 * float(np.round(box[2] / 2)))
    x0, y0 = np.round(float(box[0]) - side / 2), np.round(float(box[1]) - side / 2)
    return np.array([x0 + side / 2, y0 + side / 2, side], np.float32)


def crops_from_sources(sources: Sequence[str | os.PathLike | np.ndarray] | str | os.PathLike, size: int,
                       shots: int | None = None, detector=None, progress: bool = True,
                       on_progress: ProgressCallback | None = None, max_size: int = 512) -> FaceCrops:
    """Detect the largest face in each source and crop it to ``size``×``size``, and to H×H
    (:func:`high_resolution_size`, up to ``max_size``) as ``crops_hi``.

    dlib's HOG detector first, its CNN detector where HOG finds nothing. Sources without a
    face are skipped with a warning; if none has a face, NoFaceError. A face much smaller than
    ``size`` (it will be enlarged, hence blurry) and a face in profile are warned about.
    """
    detector = detector or get_detector("dlib")
    items = _expand_sources(sources, shots)
    if not items:
        raise TalkingHeadError("no source images given")
    crops, landmarks, notes, found = [], [], [], []
    first_image = first_box = None
    for label, image in ProgressBar(items, "detecting faces", show=progress and len(items) >= 4,
                                    on_progress=on_progress, unit="image"):
        try:
            points, _box, n_faces = detect_with_fallback(image, detector, label, notes)
        except NoFaceError:
            small = f" (the image is only {image.shape[1]}×{image.shape[0]} px)" if min(image.shape[:2]) < 96 else ""
            notes.append(f"{label}: no face found{small}, skipped")
            log.warning("%s: no face found%s, skipped", label, small)
            continue
        if n_faces > 1:
            notes.append(f"{label}: {n_faces} faces, picked the largest")
            log.warning("%s: %d faces found, picked the largest", label, n_faces)
        box = pixel_aligned_box(square_box_from_landmarks(points))
        side = float(box[2])
        if side < LOW_RESOLUTION_FRACTION * size:
            note = (f"{label}: low resolution: the face crop is {side:.0f} px and the model renders {size} px, "
                    "so it is enlarged and the avatar will be blurry; use a larger photo")
            notes.append(note)
            log.warning("%s", note)
        turn = nose_position(points)
        if np.isfinite(turn) and not PROFILE_NOSE_MARGIN <= turn <= 1 - PROFILE_NOSE_MARGIN:  # NaN: no jaw width
            note = (f"{label}: the face is in profile: its landmarks are unreliable and the side it hides can only be "
                    "mirrored from the side it shows; a frontal or three-quarter photo gives a better avatar")
            notes.append(note)
            log.warning("%s", note)
        crops.append(crop_square(image, box, size))
        found.append((image, box))
        landmarks.append(landmarks_to_crop(points, box, size))
        if first_image is None:
            first_image, first_box = image, np.asarray(box, np.float32)
    if not crops:
        names = ", ".join(label for label, _ in items[:3])
        tiny = min(min(image.shape[:2]) for _, image in items)
        hint = f" (smallest image {tiny} px: too small to detect a face)" if tiny < 96 else ""
        raise NoFaceError(f"{names}{' …' if len(items) > 3 else ''}: no face found{hint}")
    hi = high_resolution_size(found[0][1][2], size, max_size)
    crops_hi = np.stack([sharp_crop(image, box, hi) for image, box in found])
    return FaceCrops(np.stack(crops), np.stack(landmarks).astype(np.float32), first_image, first_box, notes,
                     crops_hi)
