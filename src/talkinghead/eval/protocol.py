"""The paper's few-shot evaluation protocol (self-reenactment on held-out identities).

For every held-out video: K frames from the first half of its valid frames are the few shots,
``targets`` frames evenly spaced over the second half are the targets. Each target is rendered
from its own landmarks by a feed-forward (FF) and a fine-tuned (FT) avatar built from the
shots, and compared with the real frame. A "nearest source frame" baseline returns the shot
whose landmarks are closest to the target's, unchanged: perfect identity, blind to motion.

Results are stored per (video, K) as JSON under ``out/per_video/``, so an interrupted run
resumes where it stopped; a video that fails is reported and skipped.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from talkinghead.data.episodes import Video, _FrameSource, load_videos
from talkinghead.errors import TalkingHeadError
from talkinghead.fileio import atomic_path, atomic_write_text, ensure_writable_dir
from talkinghead.infer.reenact import _normalised

log = logging.getLogger(__name__)

METHODS = ("nearest source", "FF", "FT")


@dataclass
class EvalSettings:
    shots: tuple[int, ...] = (1, 8, 32)
    targets: int = 8
    finetune_steps: int | None = None  # None: the checkpoint preset's default
    seed: int = 0
    grid_examples: int = 4


@dataclass
class VideoSamples:
    """Crops (N, S, S, 3) uint8 and landmarks (N, 68, 2) of one video's selected frames."""

    crops: np.ndarray
    landmarks: np.ndarray


def select_frames(n_valid: int, shots: int, targets: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Indices of ``shots`` frames from the first half and ``targets`` from the second half."""
    half = n_valid // 2
    if half < 1 or n_valid - half < targets or half < shots:
        return None
    shot_idx = np.linspace(0, half - 1, shots).round().astype(int)
    target_idx = np.linspace(half, n_valid - 1, targets).round().astype(int)
    return shot_idx, target_idx


def load_samples(video: Video, indices: np.ndarray, size: int) -> VideoSamples:
    source = _FrameSource(size, augment=False)
    crops, marks = [], []
    for i in indices:
        image, _sketch, landmarks = source.load(*video.frames[int(i)], False, None)
        crops.append(((image.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8))
        marks.append(landmarks.numpy())
    return VideoSamples(np.stack(crops), np.stack(marks))


def nearest_source(shots: VideoSamples, target_landmarks: np.ndarray) -> np.ndarray:
    """For each target (T, 68, 2), the shot crop whose landmarks (pose and expression) are closest."""
    shot_norm = np.stack([_normalised(l) for l in shots.landmarks])
    picks = [int(np.argmin(np.abs(shot_norm - _normalised(t)[None]).mean(axis=(1, 2)))) for t in target_landmarks]
    return shots.crops[picks]


@dataclass
class Scorer:
    """Per-frame metrics of generated vs real crops (see :mod:`talkinghead.eval.metrics`)."""

    detector: object = None
    identity: object = None
    fid_pairs: dict = field(default_factory=dict)

    def __post_init__(self):
        from talkinghead.data.landmarks import get_detector
        from talkinghead.eval.identity import FaceIdentity

        self.detector = self.detector or get_detector("dlib")
        self.identity = self.identity or FaceIdentity()

    def score(self, generated: np.ndarray, real: np.ndarray, landmarks: np.ndarray) -> dict[str, list[float]]:
        from talkinghead.eval.metrics import PSNR_CAP, detect_landmarks_on_images, nme, psnr, ssim

        detected, found = detect_landmarks_on_images(generated, landmarks, self.detector)
        rows: dict[str, list[float]] = {"ssim": [], "psnr": [], "csim": [], "nme": [], "face_found": []}
        for g, r, lm, det, f in zip(generated, real, landmarks, detected, found):
            rows["ssim"].append(float(ssim(g, r)))
            rows["psnr"].append(float(min(psnr(g, r), PSNR_CAP)))
            # Identity is measured on the face dlib finds in the generated frame; a frame without
            # a detectable face counts as 0 (aligning the embedder on the driving landmarks would
            # score even noise ~0.87: dlib's cosines are compressed).
            rows["csim"].append(float(self.identity.csim(g, r, landmarks_a=det, landmarks_b=lm)) if f else 0.0)
            rows["nme"].append(float(nme(det, lm)) if np.isfinite(det).all() else float("nan"))
            rows["face_found"].append(float(f))
        return rows


def evaluate_video(video: Video, checkpoint, settings: EvalSettings, scorer: Scorer, size: int,
                   shots: int, content_loss=None, collect=None) -> tuple[dict, dict[str, np.ndarray]]:
    """All methods for one video and one K. Returns (results, example images).
    ``collect(outputs, real)``, if given, receives every method's frames and the real targets."""
    from talkinghead.infer.avatar import Avatar

    picks = select_frames(len(video.frames), shots, settings.targets)
    if picks is None:
        raise TalkingHeadError(f"{video.key}: {len(video.frames)} valid frames, too few for K={shots} "
                               f"and {settings.targets} targets")
    shot_idx, target_idx = picks
    source = load_samples(video, shot_idx, size)
    target = load_samples(video, target_idx, size)
    outputs = {"nearest source": nearest_source(source, target.landmarks)}
    for method, steps in (("FF", 0), ("FT", settings.finetune_steps)):
        avatar = Avatar.from_crops(source.crops, source.landmarks, checkpoint, finetune_steps=steps,
                                   progress=False, seed=settings.seed, content_loss=content_loss)
        outputs[method] = avatar.animate(target.landmarks, progress=False)
        if method == "FT":
            ft_steps = avatar.finetune_steps
    if collect is not None:
        collect(outputs, target.crops)
    results = {"video": video.key, "identity": video.identity, "shots": shots, "ft_steps": ft_steps,
               "targets": [int(i) for i in target_idx],
               "metrics": {m: scorer.score(outputs[m], target.crops, target.landmarks) for m in METHODS}}
    examples = {"source": source.crops[0], "target": target.crops[0],
                **{m: outputs[m][0] for m in METHODS}}
    return results, examples


def run_evaluation(checkpoint: str | os.PathLike, data_root: str | os.PathLike, identities: list[str],
                   out_dir: str | os.PathLike, settings: EvalSettings, progress: bool = True) -> dict:
    """Evaluate a meta checkpoint on the given identities; write per-video JSON, report and grid."""
    from talkinghead.checkpoint import load_checkpoint
    from talkinghead.eval.fid import FIDFeatures
    from talkinghead.eval.report import describe_checkpoint, write_report
    from talkinghead.train.steps import build_content_loss

    out = ensure_writable_dir(out_dir)
    per_video = ensure_writable_dir(out / "per_video")
    ckpt = load_checkpoint(checkpoint)
    size = ckpt.config.model.image_size
    videos = load_videos(data_root, identities, min_frames=1)
    scorer = Scorer()
    fid = FIDFeatures.create(per_video)  # None without Inception weights
    content = build_content_loss(ckpt.config.loss, "cuda" if torch.cuda.is_available() else "cpu")
    failures: list[str] = []
    example_dir = ensure_writable_dir(out / "examples")
    middle_k = sorted(settings.shots)[len(settings.shots) // 2]
    jobs = [(v, k) for v in videos for k in settings.shots]
    for video, k in tqdm(jobs, desc="evaluating", unit="video×K", disable=not progress, dynamic_ncols=True):
        name = video.key.replace("/", "__") + f"__K{k}"
        path = per_video / f"{name}.json"
        if path.is_file():
            continue  # resumable: finished (video, K) pairs are not recomputed
        try:
            results, ex = evaluate_video(video, ckpt, settings, scorer, size, k, content_loss=content,
                                         collect=fid.collector(name) if fid else None)
        except TalkingHeadError as exc:
            failures.append(str(exc))
            log.warning("skipped: %s", exc)
            continue
        if k == middle_k:
            save_example_row(example_dir / f"{name}.png", ex)
        atomic_write_text(path, json.dumps(results))
    rows = [json.loads(p.read_text()) for p in sorted(per_video.glob("*.json"))]
    rows = [r for r in rows if r["shots"] in settings.shots and r["identity"] in set(identities)]
    if not rows:
        raise TalkingHeadError(f"{data_root}: no held-out video could be evaluated ({'; '.join(failures[:3])})")
    examples = [np.asarray(Image.open(p)) for p in sorted(example_dir.glob(f"*__K{middle_k}.png"))]
    fid_scores, fid_note = fid.scores(rows) if fid else (None, None)
    return write_report(rows, examples[: settings.grid_examples], out, checkpoint=describe_checkpoint(ckpt),
                        failures=failures, fid=fid_scores, fid_note=fid_note)


def save_example_row(path: Path, example: dict[str, np.ndarray]) -> None:
    """One grid row: source | target | nearest source | FF | FT."""
    row = np.concatenate([example[k] for k in ("source", "target", *METHODS)], axis=1)
    with atomic_path(path) as tmp:
        Image.fromarray(row).save(tmp)
