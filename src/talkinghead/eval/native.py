"""Self-reenactment at the resolution the user sees (``talkinghead evaluate --native``).

LivePortrait's self-reenactment protocol, on the held-out identities' clips of at least
``min_size`` px (the smaller side):

* the shots: the clip's first frame (K = 1), or the first frame and K − 1 frames evenly spaced
  over the clip after the scored frames (so no shot is a scored frame);
* the next ``frames`` frames of the clip are tracked as ``animate`` tracks them and drive the
  avatar through the same path as ``animate --source SHOTS --absolute --paste-back`` (its
  default output size, CLI default fine-tuning): :func:`~talkinghead.infer.driving.drive` and
  :func:`~talkinghead.infer.driving.paste_frame`;
* each output frame is scored against the real frame inside the face box (the real frame's
  landmarks' bounding square, grown 10 %), at the clip's own resolution: PSNR and SSIM over
  the box, and sharpness, the variance of the Laplacian in the box, output ÷ real;
* in the same run and through the same paste-back: the classical warp at output resolution (the
  nearest shot warped onto the same landmarks, no learning, as in the 128-px protocol), and the
  first frame unchanged.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from talkinghead.errors import TalkingHeadError
from talkinghead.eval.metrics import PSNR_CAP, psnr, ssim
from talkinghead.progress import ProgressBar

log = logging.getLogger(__name__)

METHODS = ("model", "warp", "first frame")


@dataclass
class NativeSettings:
    shots: tuple[int, ...] = (1, 8)
    #: Scored frames per clip (the frames after the first): the cap that keeps a run to minutes.
    frames: int = 24
    #: Clips whose smaller side is below this are left out (px).
    min_size: int = 256
    #: Fine-tuning steps; None: the checkpoint's default, as ``animate`` uses.
    finetune_steps: int | None = None
    #: Output size; None: the avatar's default (the face's own resolution, capped).
    size: int | None = None


@dataclass
class NativeClip:
    identity: str
    path: Path
    width: int
    height: int
    frames: int


def native_clips(manifest: str | os.PathLike, identities, min_size: int) -> list[NativeClip]:
    """The manifest's video rows of ``identities`` whose smaller side is at least ``min_size``."""
    manifest = Path(manifest)
    wanted = set(identities)
    clips = []
    with open(manifest, newline="") as f:
        for row in csv.DictReader(f):
            if row.get("kind") != "video" or row.get("identity") not in wanted:
                continue
            width, height = int(row["width"]), int(row["height"])
            if min(width, height) >= min_size:
                clips.append(NativeClip(row["identity"], manifest.parent / row["path"], width, height,
                                        int(row["frames"])))
    return clips


def face_box(landmarks: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the (68, 2) landmarks' bounding square grown 10 %, inside the frame."""
    lo, hi = landmarks.min(0), landmarks.max(0)
    centre, half = (lo + hi) / 2, float(max(hi - lo)) * 0.55
    x0, y0 = (centre - half).round().astype(int)
    x1, y1 = (centre + half).round().astype(int)
    return max(0, x0), max(0, y0), min(width, x1), min(height, y1)


def laplacian_variance(image: np.ndarray) -> float:
    """Variance of the Laplacian of an (H, W, 3) uint8 image's grey levels (fine detail)."""
    grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_32F).var())


def score_frame(output: np.ndarray, real: np.ndarray, landmarks: np.ndarray) -> tuple[float, float, float]:
    """PSNR (capped), SSIM and sharpness ratio of a full-resolution output frame against the real
    one, inside the real frame's face box."""
    x0, y0, x1, y1 = face_box(landmarks, real.shape[1], real.shape[0])
    a, b = output[y0:y1, x0:x1], real[y0:y1, x0:x1]
    reference = laplacian_variance(b)
    return (float(min(psnr(a, b), PSNR_CAP)), float(ssim(a, b)),
            laplacian_variance(a) / reference if reference > 0 else float("nan"))


def _read_frames(path: Path, count: int, shot_indices: list[int]) -> tuple[list[np.ndarray], dict[int, np.ndarray]]:
    """The first ``count`` frames, and the frames at ``shot_indices`` (beyond them)."""
    from talkinghead.data.video import iter_frames

    first, shots = [], {}
    last = max([count - 1, *shot_indices])
    for i, frame in enumerate(iter_frames(path, max_frames=last + 1)):
        if i < count:
            first.append(frame)
        if i in shot_indices:
            shots[i] = frame
    return first, shots


def _to_images(tensor: torch.Tensor) -> np.ndarray:
    from talkinghead.data.sketch import tensor_to_image

    return tensor_to_image(tensor)


def evaluate_clip(checkpoint, clip: NativeClip, settings: NativeSettings, detector=None) -> dict:
    """Scores of one clip: {K: {method: [(psnr, ssim, sharpness) per frame]}}, and its size."""
    from talkinghead.data.landmarks import get_detector
    from talkinghead.data.tracking import track_landmarks
    from talkinghead.infer.avatar import Avatar
    from talkinghead.infer.driving import DrivingTrack, drive, hold_lost_frames, paste_frame

    detector = detector or get_detector("dlib")
    count = settings.frames + 1
    spare = list(range(count, clip.frames))
    shot_sets = {}
    for k in settings.shots:
        picks = [] if k < 2 or not spare else [spare[int(i)] for i in np.linspace(0, len(spare) - 1, k - 1).round()]
        shot_sets[k] = picks
    frames, extra = _read_frames(clip.path, count, sorted({i for p in shot_sets.values() for i in p}))
    if len(frames) < 2:
        raise TalkingHeadError(f"{clip.path}: fewer than 2 frames")
    landmarks, valid, _ = track_landmarks(iter(frames), detector)
    if not valid[0]:
        raise TalkingHeadError(f"{clip.path}: no face in the first frame")
    filled, lost = hold_lost_frames(np.where(valid[:, None, None], landmarks, np.nan))
    track = DrivingTrack(filled[1:], 25.0, lost, None)
    scored = [t for t in range(1, len(frames)) if valid[t]]
    out: dict = {"identity": clip.identity, "path": str(clip.path), "width": clip.width, "height": clip.height}
    for k, picks in shot_sets.items():
        images = [frames[0]] + [extra[i] for i in picks if i in extra]
        avatar = Avatar.from_images(images, checkpoint, finetune_steps=settings.finetune_steps, progress=False,
                                    detector=detector)
        size = avatar.check_size(settings.size)
        adapted, rendered = drive(avatar, track, mode="absolute", size=size, progress=False)
        with torch.inference_mode():
            warped = _to_images(avatar.detail_renderer().classical_warp(torch.from_numpy(adapted).to(avatar.device),
                                                                        size))
        rows = {m: [] for m in METHODS}
        for t in scored:
            real, marks = frames[t], landmarks[t]
            rows["model"].append(score_frame(paste_frame(avatar, rendered[t - 1], adapted[t - 1]), real, marks))
            rows["warp"].append(score_frame(paste_frame(avatar, warped[t - 1], adapted[t - 1]), real, marks))
            rows["first frame"].append(score_frame(frames[0], real, marks))
        out[str(k)] = {"size": size, "shots": len(images), **rows}
    return out


def summarise(results: list[dict], shots) -> dict:
    """Mean PSNR, SSIM and sharpness over every scored frame of every clip, per K and method."""
    table = {}
    for k in shots:
        for method in METHODS:
            values = np.array([row for r in results if str(k) in r for row in r[str(k)][method]], np.float64)
            if len(values) == 0:
                continue
            table[(k, method)] = {"psnr": float(values[:, 0].mean()), "ssim": float(values[:, 1].mean()),
                                  "sharpness": float(np.nanmean(values[:, 2])), "frames": int(len(values))}
    return table


def markdown(table: dict, clips: int) -> str:
    lines = [f"| K | method | PSNR | SSIM | sharpness (output ÷ real) | frames ({clips} clips) |",
             "|---:|---|---:|---:|---:|---:|"]
    for (k, method), v in table.items():
        lines.append(f"| {k} | {method} | {v['psnr']:.2f} | {v['ssim']:.3f} | {v['sharpness']:.2f} | {v['frames']} |")
    return "\n".join(lines)


def run_native_evaluation(checkpoint, manifest: str | os.PathLike, identities, output: str | os.PathLike,
                          settings: NativeSettings, progress: bool = True) -> dict:
    """Every clip of :func:`native_clips`; writes ``native.json`` and ``native.md`` into ``output``
    (atomically) and returns {"table": ..., "markdown": ..., "failed": [...]}."""
    from talkinghead.checkpoint import load_checkpoint
    from talkinghead.fileio import atomic_path

    clips = native_clips(manifest, identities, settings.min_size)
    if not clips:
        raise TalkingHeadError(f"{manifest}: no video of the held-out identities is {settings.min_size} px or more")
    ckpt = load_checkpoint(checkpoint)
    results, failed = [], []
    for clip in ProgressBar(clips, "native evaluation", show=progress, unit="clip"):
        try:
            results.append(evaluate_clip(ckpt, clip, settings))
        except TalkingHeadError as exc:
            log.warning("%s: skipped (%s)", clip.path, exc)
            failed.append(f"{clip.path}: {exc}")
    table = summarise(results, settings.shots)
    text = markdown(table, len(results))
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    report = {"settings": asdict(settings), "clips": results, "failed": failed,
              "table": [{"shots": k, "method": m, **v} for (k, m), v in table.items()]}
    with atomic_path(folder / "native.json") as tmp:
        Path(tmp).write_text(json.dumps(report, indent=1))
    with atomic_path(folder / "native.md") as tmp:
        Path(tmp).write_text(text + "\n")
    return {"table": table, "markdown": text, "failed": failed, "report": str(folder / "native.md")}
