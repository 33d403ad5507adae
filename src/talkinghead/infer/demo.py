"""`talkinghead demo`: the whole few-shot pipeline on bundled inputs, offline.

Source: scikit-image's ``astronaut`` (Eileen Collins, NASA; public domain) unless ``--source``.
Driving: a landmark track the project extracted from a LivePortrait example video (MIT), unless
``--driving``. The avatar is fine-tuned on the one source image (FT), driven in relative mode
(its own face shape, the driver's motion), rendered at the resolution the photo gives the face
(``Avatar.output_size``), and written as ``demo.mp4`` (driving sketch | result) and ``demo.png``
(a strip of frames). The command then checks the output with
:func:`talkinghead.eval.selfcheck.check_rendering` (measuring lives in ``eval``, above ``infer``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talkinghead.data.sketch import landmarks_to_sketch
from talkinghead.errors import TalkingHeadError
from talkinghead.fileio import atomic_path, ensure_writable_dir
from talkinghead.infer.bundled import ASSETS, resolve_checkpoint

log = logging.getLogger(__name__)

DEMO_TRACK = ASSETS / "demo_track.npy"


@dataclass
class DemoResult:
    video: Path
    strip: Path
    rendered: np.ndarray  # (T, O, O, 3) uint8: the avatar's frames at its output size
    driving: np.ndarray  # (T, 68, 2): the adapted landmarks that drove them, in the output's pixels
    seconds: float

    @property
    def frames(self) -> int:
        return len(self.rendered)


def bundled_source() -> np.ndarray:
    """scikit-image's astronaut portrait (public domain), (512, 512, 3) uint8 RGB."""
    from skimage import data

    return data.astronaut()


def bundled_track() -> tuple[np.ndarray, float]:
    meta = json.loads(DEMO_TRACK.with_suffix(".json").read_text())
    return np.load(DEMO_TRACK, allow_pickle=False), float(meta["fps"])


def frame_strip(sketches: np.ndarray, frames: np.ndarray, count: int = 8) -> np.ndarray:
    """Two rows (driving sketch over result) of ``count`` evenly spaced frames."""
    picks = np.linspace(0, len(frames) - 1, count).round().astype(int)
    top = np.concatenate([sketches[i] for i in picks], axis=1)
    bottom = np.concatenate([frames[i] for i in picks], axis=1)
    return np.concatenate([top, bottom], axis=0)


def run_demo(out_dir: str | os.PathLike = ".", source: str | None = None, driving: str | None = None,
             checkpoint: str | None = None, steps: int | None = None, max_frames: int | None = None,
             progress: bool = True, overrides: list[str] | tuple[str, ...] = (),
             smooth: bool = True, size: int | None = None) -> DemoResult:
    from PIL import Image

    from talkinghead.data.video import write_video
    from talkinghead.infer.avatar import Avatar
    from talkinghead.infer.driving import DrivingTrack, smoothed, track_from_video
    from talkinghead.infer.reenact import adapt_landmarks

    start = time.perf_counter()
    out_dir = ensure_writable_dir(out_dir)
    ckpt = resolve_checkpoint(checkpoint)
    image = source if source is not None else bundled_source()
    if driving is not None:
        if not Path(driving).exists():
            raise TalkingHeadError(f"{driving}: driving video not found")
        track = track_from_video(driving, progress=progress)
    else:
        landmarks, fps = bundled_track()
        track = DrivingTrack(landmarks, fps, 0, None)
    if max_frames:
        track.landmarks = track.landmarks[:max_frames]
    if smooth:  # as `animate` does: no detector jitter
        track = smoothed(track)

    avatar = Avatar.from_images([image], ckpt, finetune_steps=steps, progress=progress, overrides=overrides)
    adapted = adapt_landmarks(track.landmarks, avatar.reference_landmarks, mode="relative")
    frames = avatar.animate(adapted, progress=progress, size=size)  # default: the face's own resolution (capped)
    adapted = adapted * (frames.shape[1] / avatar.size)  # into the output's pixels
    sketches = np.stack([landmarks_to_sketch(l, frames.shape[1]) for l in adapted])

    video = out_dir / "demo.mp4"
    side_by_side = (np.concatenate([s, f], axis=1) for s, f in zip(sketches, frames))
    write_video(video, side_by_side, track.fps, audio_from=str(track.video) if track.video else None)
    strip = out_dir / "demo.png"
    with atomic_path(strip) as tmp:
        Image.fromarray(frame_strip(sketches, frames)).save(tmp)

    return DemoResult(video, strip, frames, adapted, time.perf_counter() - start)
