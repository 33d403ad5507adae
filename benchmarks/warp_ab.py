"""Shared by the warp A/B benchmarks (``warp_symmetric_fill.py``, ``warp_shot_check.py``): score
two variants of the evaluation protocol's warp on the dev split as ``evaluate`` scores them, and
draw a strip of the video the change touched most.

Not a benchmark itself; run the scripts that import it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from talkinghead.eval.protocol import Scorer
from talkinghead.fileio import atomic_path

METRICS = ("ssim", "psnr", "csim", "nme", "face_found")


class WarpComparison:
    """Scores of a ``before`` and an ``after`` warp over the targets of one K.

    Frames the change leaves identical score identically, so ``after`` is only scored for videos
    where some target changed (dlib is the slow part).
    """

    def __init__(self, scorer: Scorer, before: str, after: str):
        self.scorer, self.names = scorer, (before, after)
        self.scores = {name: {m: [] for m in METRICS} for name in self.names}
        self.changed_videos = self.changed_targets = 0

    def add(self, before: np.ndarray, after: np.ndarray, targets) -> tuple[np.ndarray, dict]:
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
        for name in self.names:
            s = self.scores[name]
            nme = np.nanmean(s["nme"])  # over frames where dlib found landmarks, as `evaluate`
            print(f"  {name:8s} SSIM {np.mean(s['ssim']):.4f}  PSNR {np.mean(s['psnr']):6.2f}  "
                  f"CSIM {np.mean(s['csim']):.4f}  NME {nme:.4f}  face found {100 * np.mean(s['face_found']):.1f}% "
                  f"({len(s['ssim'])} targets)")


def write_strip(path: Path, rows: list[np.ndarray], caption: str) -> None:
    """Rows of (T, S, S, 3) uint8 frames → one PNG, written atomically."""
    picture = np.concatenate([np.concatenate(list(row), axis=1) for row in rows], axis=0)
    with atomic_path(path) as tmp:
        Image.fromarray(picture).save(tmp, format="PNG")
    print(f"wrote {path} (rows: {caption})")
