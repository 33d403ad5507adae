"""What the experiments share: their common options, the protocol's clips of a split, the
bundled model by default, a Markdown table, and the A/B comparison of two warps.

An experiment is a one-off question asked of the evaluation protocol
(:mod:`talkinghead.eval.protocol`); its answer and command live in docs/experiments.md. Run
them from the repository root, e.g. ``python experiments/warp_fusion.py --data data/faces128``.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from talkinghead.checkpoint import Checkpoint, load_checkpoint
from talkinghead.data.episodes import Video, load_videos
from talkinghead.eval.protocol import JITTER_FRAMES, Scorer, VideoSamples, load_samples, select_frames
from talkinghead.eval.splits import load_split
from talkinghead.fileio import atomic_path
from talkinghead.infer.bundled import resolve_checkpoint


def parser(doc: str, shots: Sequence[int] = (1,), checkpoint: bool = False) -> argparse.ArgumentParser:
    """The options every experiment takes: the data, which identities (split file and split),
    how many of their videos, K, the targets per video and, with ``checkpoint``, the model."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0], epilog=doc.split("\n\n", 1)[-1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="data set prepared by `talkinghead prepare`")
    ap.add_argument("--split-file", default="faces", help="identity split: 'faces' (bundled) or a JSON file")
    ap.add_argument("--split", default="dev", help="which identities of the split file (default: dev)")
    ap.add_argument("--videos", type=int, default=0, help="draw this many videos (seed 0); 0: all")
    ap.add_argument("--shots", type=int, nargs="+", default=list(shots), help="K: the avatar's shots")
    ap.add_argument("--targets", type=int, default=8, help="targets per video, as `evaluate`")
    if checkpoint:
        ap.add_argument("--checkpoint", default=None, help="meta checkpoint (default: the bundled model)")
    return ap


def clips(args: argparse.Namespace, min_frames: int = 1) -> list[Video]:
    """The videos of ``args.split`` with at least ``min_frames`` valid frames: all of them, or
    ``args.videos`` drawn with seed 0."""
    videos = load_videos(args.data, load_split(args.split_file)[args.split], min_frames=min_frames)
    if args.videos:
        pick = np.random.default_rng(0).choice(len(videos), min(args.videos, len(videos)), replace=False)
        videos = [videos[i] for i in sorted(pick)]
    return videos


def jitter_clips(args: argparse.Namespace) -> list[Video]:
    """:func:`clips` with a full jitter run in their second half and room for its shots."""
    return clips(args, min_frames=2 * JITTER_FRAMES + 12)


def protocol_samples(videos: list[Video], shots: int, targets: int,
                     size: int | None) -> Iterator[tuple[Video, VideoSamples, VideoSamples]]:
    """(video, its K shots, its targets) as ``evaluate`` picks them, for every video with enough
    frames; crops at ``size`` (None: as prepared)."""
    for video in videos:
        picks = select_frames(len(video.frames), shots, targets)
        if picks is not None:
            yield video, load_samples(video, picks[0], size), load_samples(video, picks[1], size)


def model(args: argparse.Namespace) -> Checkpoint:
    """``--checkpoint``, or the bundled model."""
    return load_checkpoint(resolve_checkpoint(getattr(args, "checkpoint", None)))


def print_table(header: Sequence[str], rows: Sequence[Sequence], title: str | None = None) -> None:
    """A Markdown table (floats to 4 decimals), for docs/experiments.md."""
    if title:
        print(f"# {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---:|" * len(header))
    for row in rows:
        print("| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row) + " |")


METRICS = ("ssim", "psnr", "csim", "nme", "face_found")


class WarpComparison:
    """Scores of a ``before`` and an ``after`` warp over the targets of one K, as ``evaluate``
    scores them. Frames the change leaves identical score identically, so ``after`` is only
    scored for videos where some target changed (dlib is the slow part)."""

    def __init__(self, scorer: Scorer, before: str, after: str):
        self.scorer, self.names = scorer, (before, after)
        self.scores = {name: {m: [] for m in METRICS} for name in self.names}
        self.changed_videos = self.changed_targets = 0

    def add(self, before: np.ndarray, after: np.ndarray, targets: VideoSamples) -> tuple[np.ndarray, dict]:
        """(T, S, S, 3) uint8 frames of each variant for one video's targets → ((T,) bool changed,
        per-variant score rows)."""
        changed = (before != after).any(axis=(1, 2, 3))
        rows = {self.names[0]: self.scorer.score(before, targets.crops, targets.landmarks)}
        rows[self.names[1]] = (self.scorer.score(after, targets.crops, targets.landmarks) if changed.any()
                               else rows[self.names[0]])
        for name in self.names:
            for m in METRICS:
                self.scores[name][m].extend(rows[name][m])
        if changed.any():
            self.changed_videos += 1
            self.changed_targets += int(changed.sum())
        return changed, rows

    def print_summary(self) -> None:
        rows = []
        for name in self.names:
            s = self.scores[name]
            rows.append((name, float(np.mean(s["ssim"])), float(np.mean(s["psnr"])), float(np.mean(s["csim"])),
                         float(np.nanmean(s["nme"])),  # over frames where dlib found landmarks, as `evaluate`
                         f"{100 * np.mean(s['face_found']):.1f}%", len(s["ssim"])))
        print_table(("variant", "SSIM", "PSNR", "CSIM", "NME", "face found", "targets"), rows)


def write_strip(path: Path, rows: list[np.ndarray], caption: str) -> None:
    """Rows of (T, S, S, 3) uint8 frames → one PNG, written atomically."""
    picture = np.concatenate([np.concatenate(list(row), axis=1) for row in rows], axis=0)
    with atomic_path(path) as tmp:
        Image.fromarray(picture).save(tmp, format="PNG")
    print(f"wrote {path} (rows: {caption})")
