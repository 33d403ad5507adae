"""Turning user inputs (photos, paintings, videos) into aligned face crops and landmarks,
exactly as ``talkinghead prepare`` crops training data, so G sees the framing it learned."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from talkinghead.data.crop import crop_square, landmarks_to_crop, square_box_from_landmarks
from talkinghead.data.landmarks import detect_largest_face, get_detector
from talkinghead.data.video import iter_frames, read_image
from talkinghead.errors import NoFaceError, TalkingHeadError

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = {".mp4", ".mov", ".avi", ".webm", ".mkv", ".m4v"}


@dataclass
class FaceCrops:
    crops: np.ndarray  # (K, S, S, 3) uint8
    landmarks: np.ndarray  # (K, 68, 2) in crop pixels
    source_image: np.ndarray  # first source image, full size (for paste-back)
    source_box: np.ndarray  # (cx, cy, side) of its crop
    notes: list[str] = field(default_factory=list)


def _expand_sources(sources, shots: int | None) -> list[tuple[str, np.ndarray]]:
    """(label, image) pairs from image paths/arrays, or ``shots`` frames of one video/folder."""
    if isinstance(sources, (str, os.PathLike)):
        path = Path(sources)
        if path.is_dir() or path.suffix.lower() in VIDEO_EXTENSIONS:
            frames = list(iter_frames(path))
            count = min(len(frames), shots or 8)
            picks = np.linspace(0, len(frames) - 1, count).round().astype(int)
            return [(f"{path}#{i}", frames[i]) for i in picks]
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


def crops_from_sources(sources: Sequence[str | os.PathLike | np.ndarray] | str | os.PathLike, size: int,
                       shots: int | None = None, detector=None, progress: bool = True) -> FaceCrops:
    """Detect the largest face in each source and crop it to ``size``×``size``.

    Sources without a face are skipped with a warning; if none has a face, NoFaceError.
    """
    detector = detector or get_detector("dlib")
    items = _expand_sources(sources, shots)
    if not items:
        raise TalkingHeadError("no source images given")
    crops, landmarks, notes = [], [], []
    first_image = first_box = None
    for label, image in tqdm(items, desc="detecting faces", unit="image", disable=not progress or len(items) < 4):
        try:
            points, _box, n_faces = detect_largest_face(image, detector)
        except NoFaceError:
            notes.append(f"{label}: no face found, skipped")
            log.warning("%s: no face found, skipped", label)
            continue
        if n_faces > 1:
            notes.append(f"{label}: {n_faces} faces, picked the largest")
            log.warning("%s: %d faces found, picked the largest", label, n_faces)
        box = square_box_from_landmarks(points)
        crops.append(crop_square(image, box, size))
        landmarks.append(landmarks_to_crop(points, box, size))
        if first_image is None:
            first_image, first_box = image, np.asarray(box, np.float32)
    if not crops:
        names = ", ".join(label for label, _ in items[:3])
        raise NoFaceError(f"{names}{' …' if len(items) > 3 else ''}: no face found")
    return FaceCrops(np.stack(crops), np.stack(landmarks).astype(np.float32), first_image, first_box, notes)
