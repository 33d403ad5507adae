"""The paper's few-shot evaluation protocol (self-reenactment on held-out identities).

For every held-out video: K frames from the first half of its valid frames are the few shots,
``targets`` frames evenly spaced over the second half are the targets. Each target is rendered
from its own landmarks by a feed-forward (FF) and a fine-tuned (FT) avatar built from the
shots, and compared with the real frame. Two baselines need no learning: "nearest source"
returns the shot whose landmarks are closest to the target's, unchanged (perfect identity,
blind to motion); "warp" warps that shot onto the target's landmarks (piecewise-affine,
:mod:`talkinghead.data.warp`) — the classical warp, as the paper compared with X2Face.

Besides the per-frame metrics, each method renders ``JITTER_FRAMES`` consecutive frames from
the second half (driving landmarks smoothed as ``animate`` does) to measure temporal jitter.

Results are stored per (video, K) as JSON under ``out/per_video/`` with a key of everything
that determines them (the checkpoint's SHA-256, its fine-tuning settings, the protocol
settings, the video's frames), so an interrupted run resumes where it stopped and a run with
another checkpoint or settings recomputes; a video that fails is reported and skipped.
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

from talkinghead.data.episodes import Video, FrameSource, load_videos
from talkinghead.errors import TalkingHeadError
from talkinghead.fileio import atomic_path, atomic_write_text, ensure_writable_dir
from talkinghead.infer.reenact import normalised_shape
from talkinghead.models.guide import WarpGuide

log = logging.getLogger(__name__)

METHODS = ("nearest source", "warp", "FF", "FT")
#: Methods whose temporal jitter is measured (nearest source jumps between shots by design).
JITTER_METHODS = ("warp", "FF", "FT")
#: Consecutive frames rendered per (video, K) for the jitter figure (about 2 s, long enough for
#: a repeatable figure), and their assumed rate.
JITTER_FRAMES = 48
JITTER_FPS = 25.0
#: Bumped whenever the protocol changes what a per-video result holds (history: docs/experiments.md).
PROTOCOL_VERSION = 6


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


def jitter_frames(n_valid: int, count: int = JITTER_FRAMES) -> np.ndarray:
    """Up to ``count`` consecutive indices at the start of the second half."""
    half = n_valid // 2
    return np.arange(half, min(n_valid, half + count))


def classical_warp(shots: VideoSamples, target_landmarks: np.ndarray, batch: int = 16, fuse: int = 1,
                   symmetric_fill: bool = True, penalty: np.ndarray | None = None,
                   guide: WarpGuide | None = None) -> np.ndarray:
    """The warp baseline: for each target (T, 68, 2), the nearest shot warped onto its landmarks
    (background rigid, what the shot hides mirrored from what it shows) → (T, S, S, 3) uint8.
    ``fuse`` > 1 or a (K,) ``penalty`` (shots with guessed landmarks passed over): the guide of a
    warp-guided G (``guide``, default :class:`~talkinghead.models.guide.WarpGuide` of today's
    settings), not the baseline."""
    from talkinghead.data.sketch import image_to_tensor, tensor_to_image

    guide = guide or WarpGuide()
    frames = torch.stack([image_to_tensor(c) for c in shots.crops])  # (K, 3, S, S)
    marks = torch.from_numpy(np.asarray(shots.landmarks, np.float32))
    extra = None if penalty is None else torch.as_tensor(np.asarray(penalty, np.float32))[None]
    out = []
    for start in range(0, len(target_landmarks), batch):
        chunk = torch.from_numpy(np.asarray(target_landmarks[start:start + batch], np.float32))
        b = len(chunk)
        image = guide(frames[None].expand(b, -1, -1, -1, -1), marks[None].expand(b, -1, -1, -1), chunk,
                      fuse=fuse, symmetric_fill=symmetric_fill, penalty=None if extra is None else extra.expand(b, -1))
        out.append(tensor_to_image(image[:, :3]))
    return np.concatenate(out)


def load_samples(video: Video, indices: np.ndarray, size: int) -> VideoSamples:
    source = FrameSource(size, augment=False)
    crops, marks = [], []
    for i in indices:
        image, _sketch, landmarks = source.load(*video.frames[int(i)], False, None)
        crops.append(((image.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8))
        marks.append(landmarks.numpy())
    return VideoSamples(np.stack(crops), np.stack(marks))


def jitter_run(video: Video, size: int, count: int = JITTER_FRAMES) -> tuple[VideoSamples, np.ndarray]:
    """The real frames of a video's jitter run (:func:`jitter_frames`) and the (T, 68, 2) landmarks
    that drive it: theirs, One-Euro smoothed as ``animate`` drives by default."""
    from talkinghead.infer.smoothing import smooth_landmarks

    run = load_samples(video, jitter_frames(len(video.frames), count), size)
    return run, smooth_landmarks(run.landmarks, JITTER_FPS)


def nearest_source(shots: VideoSamples, target_landmarks: np.ndarray) -> np.ndarray:
    """For each target (T, 68, 2), the shot crop whose landmarks (pose and expression) are closest."""
    shot_norm = np.stack([normalised_shape(l) for l in shots.landmarks])
    picks = [int(np.argmin(np.abs(shot_norm - normalised_shape(t)[None]).mean(axis=(1, 2)))) for t in target_landmarks]
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
        from talkinghead.eval.metrics import detect_landmarks_on_images, image_scores, nme

        detected, found = detect_landmarks_on_images(generated, landmarks, self.detector)
        rows: dict[str, list[float]] = {"ssim": [], "psnr": [], "csim": [], "nme": [], "face_found": [],
                                        "sharpness": []}
        for g, r, lm, det, f in zip(generated, real, landmarks, detected, found):
            for name, value in zip(("ssim", "psnr", "sharpness"), image_scores(g, r, lm)):
                rows[name].append(value)
            # Identity is measured on the face dlib finds in the generated frame; a frame without
            # a detectable face counts as 0 (aligning the embedder on the driving landmarks would
            # score even noise ~0.87: dlib's cosines are compressed).
            rows["csim"].append(float(self.identity.csim(g, r, landmarks_a=det, landmarks_b=lm)) if f else 0.0)
            rows["nme"].append(float(nme(det, lm)) if np.isfinite(det).all() else float("nan"))
            rows["face_found"].append(float(f))
        return rows

    def jitter(self, generated: np.ndarray, driver_landmarks: np.ndarray) -> float:
        """Landmark acceleration on ``generated`` (T, S, S, 3) ÷ the driver's (T, 68, 2)."""
        from talkinghead.eval.metrics import detect_landmarks_on_images, jitter_ratio

        detected, _ = detect_landmarks_on_images(generated, driver_landmarks, self.detector)
        return float(jitter_ratio(detected, driver_landmarks))


@dataclass
class Rendered:
    """Every method's frames for one video and one K, and the real frames they are scored against."""

    source: VideoSamples  # the K shots
    target: VideoSamples  # the targets
    target_idx: np.ndarray  # (T,) their indices among the video's valid frames
    outputs: dict[str, np.ndarray]  # method → (T, S, S, 3) uint8, one frame per target
    run: VideoSamples  # the jitter run's real frames
    runs: dict[str, np.ndarray]  # method (of JITTER_METHODS) → the jitter run's frames
    ft_steps: int  # fine-tuning steps the FT avatar took


def render_methods(video: Video, checkpoint, settings: EvalSettings, size: int, shots: int,
                   content_loss=None) -> Rendered:
    """Render the targets and the jitter run of ``video`` with every method, from its K = ``shots`` shots."""
    from talkinghead.infer.avatar import Avatar

    picks = select_frames(len(video.frames), shots, settings.targets)
    if picks is None:
        raise TalkingHeadError(f"{video.key}: {len(video.frames)} valid frames, too few for K={shots} "
                               f"and {settings.targets} targets")
    shot_idx, target_idx = picks
    source = load_samples(video, shot_idx, size)
    target = load_samples(video, target_idx, size)
    run, run_drive = jitter_run(video, size)
    outputs = {"nearest source": nearest_source(source, target.landmarks),
               "warp": classical_warp(source, target.landmarks)}
    runs = {"warp": classical_warp(source, run_drive)}
    for method, steps in (("FF", 0), ("FT", settings.finetune_steps)):
        avatar = Avatar.from_crops(source.crops, source.landmarks, checkpoint, finetune_steps=steps,
                                   progress=False, seed=settings.seed, content_loss=content_loss)
        outputs[method] = avatar.animate(target.landmarks, progress=False, consecutive=False, size=avatar.size)
        runs[method] = avatar.animate(run_drive, progress=False, size=avatar.size)
        if method == "FT":
            ft_steps = avatar.finetune_steps
    return Rendered(source, target, target_idx, outputs, run, runs, ft_steps)


def score_rendered(video: Video, shots: int, rendered: Rendered, scorer: Scorer) -> tuple[dict, dict[str, np.ndarray]]:
    """(per-video results, example images) of :func:`render_methods`' frames."""
    target, run = rendered.target, rendered.run
    results = {"video": video.key, "identity": video.identity, "shots": shots, "ft_steps": rendered.ft_steps,
               "targets": [int(i) for i in rendered.target_idx],
               "metrics": {m: scorer.score(rendered.outputs[m], target.crops, target.landmarks) for m in METHODS}}
    for m in JITTER_METHODS:
        results["metrics"][m]["jitter"] = [scorer.jitter(rendered.runs[m], run.landmarks)]
    examples = {"source": rendered.source.crops[0], "target": target.crops[0],
                **{m: rendered.outputs[m][0] for m in METHODS}}
    return results, examples


def evaluate_video(video: Video, checkpoint, settings: EvalSettings, scorer: Scorer, size: int,
                   shots: int, content_loss=None) -> tuple[dict, dict[str, np.ndarray]]:
    """All methods for one video and one K. Returns (results, example images)."""
    return score_rendered(video, shots, render_methods(video, checkpoint, settings, size, shots, content_loss),
                          scorer)


def result_key(checkpoint_sha256: str, config, settings: EvalSettings, video: Video, shots: int) -> str:
    """SHA-256 of everything that determines one (video, K) result: a cached result is reused
    only when the checkpoint, its fine-tuning settings, the protocol and the video are the same."""
    import dataclasses
    import hashlib

    # Only what changes FF/FT avatars: the checkpoint's SHA covers its own config, so the key holds
    # the fine-tuning fields and losses as applied (they can be overridden); a new training-only
    # field elsewhere in the config leaves cached results valid.
    train = {k: v for k, v in config.to_dict()["train"].items() if k.startswith("finetune") or k == "betas"}
    parts = {"protocol": PROTOCOL_VERSION, "checkpoint": checkpoint_sha256,
             "train": train, "loss": config.to_dict()["loss"], "guide": config.to_dict()["guide"],
             "settings": {k: v for k, v in dataclasses.asdict(settings).items() if k != "grid_examples"},
             "video": video.key, "frames": [list(map(str, f)) for f in video.frames], "shots": shots}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def run_evaluation(checkpoint: str | os.PathLike, data_root: str | os.PathLike, identities: list[str],
                   out_dir: str | os.PathLike, settings: EvalSettings, progress: bool = True) -> dict:
    """Evaluate a meta checkpoint on the given identities; write per-video JSON, report and grid."""
    from talkinghead.checkpoint import file_sha256, load_checkpoint
    from talkinghead.eval.fid import FIDFeatures
    from talkinghead.eval.report import describe_checkpoint, write_report
    from talkinghead.losses import build_content_loss

    out = ensure_writable_dir(out_dir)
    per_video = ensure_writable_dir(out / "per_video")
    ckpt = load_checkpoint(checkpoint)
    checkpoint_sha = file_sha256(ckpt.path)  # cached: avatars built below reuse it
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
        key = result_key(checkpoint_sha, ckpt.config, settings, video, k)
        if path.is_file() and _cached_key(path) == key:
            continue  # resumable: finished (video, K) pairs with the same inputs are not recomputed
        try:
            rendered = render_methods(video, ckpt, settings, size, k, content_loss=content)
            if fid:
                fid.add(name, rendered.outputs, rendered.target.crops)
            results, ex = score_rendered(video, k, rendered, scorer)
        except TalkingHeadError as exc:
            failures.append(str(exc))
            log.warning("skipped: %s", exc)
            continue
        if k == middle_k:
            save_example_row(example_dir / f"{name}.png", ex)
        atomic_write_text(path, json.dumps({**results, "key": key}))
    wanted = {result_key(checkpoint_sha, ckpt.config, settings, v, k) for v, k in jobs}
    rows = [json.loads(p.read_text()) for p in sorted(per_video.glob("*.json"))]
    rows = [r for r in rows if r.get("key") in wanted]  # never another checkpoint's or setting's results
    if not rows:
        raise TalkingHeadError(f"{data_root}: no held-out video could be evaluated ({'; '.join(failures[:3])})")
    current = {video.key.replace("/", "__") + f"__K{middle_k}.png" for video in videos}
    examples = [np.asarray(Image.open(p)) for p in sorted(example_dir.glob(f"*__K{middle_k}.png"))
                if p.name in current]
    fid_scores, fid_note = fid.scores(rows) if fid else (None, None)
    return write_report(rows, examples[: settings.grid_examples], out,
                        checkpoint=describe_checkpoint(ckpt), failures=failures,
                        fid=fid_scores, fid_note=fid_note)


def _cached_key(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("key")
    except (OSError, ValueError):
        return None  # unreadable or half-written by an older version: recompute


def save_example_row(path: Path, example: dict[str, np.ndarray]) -> None:
    """One grid row: source | target | nearest source | warp | FF | FT."""
    row = np.concatenate([example[k] for k in ("source", "target", *METHODS)], axis=1)
    with atomic_path(path) as tmp:
        Image.fromarray(row).save(tmp)
