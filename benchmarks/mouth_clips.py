"""Shared by the mouth benchmarks: the shared faces data's clips of one split, their landmark
tracks (cached, as tracking 1080p frames on a CPU is the slow part) and their frames.

    python benchmarks/mouth_clips.py --split dev            # track and cache the dev clips
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FACES = Path("/work/shared/data/faces")
CACHE = Path("/work/data/mouth/tracks")
#: Frames of each clip used (the first ones): enough speech for a correlation, cheap to track.
MAX_FRAMES = 150


@dataclass
class Clip:
    identity: str
    path: Path
    fps: float

    @property
    def name(self) -> str:
        return self.path.name.split(".")[0]


def split_clips(split: str, faces: Path = FACES) -> list[Clip]:
    """The manifest's video/frame clips of the identities in ``split`` ("dev" or "train")."""
    from talkinghead.infer.bundled import ASSETS

    identities = set(json.loads((ASSETS / "split_faces.json").read_text())[split])
    with open(faces / "manifest.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["kind"] in ("video", "frames") and r["identity"] in identities]
    return [Clip(r["identity"], faces / r["path"], float(r["fps"] or 25)) for r in rows]


def clip_frames(clip: Clip, max_frames: int = MAX_FRAMES):
    from talkinghead.data.video import iter_frames

    return iter_frames(clip.path, max_frames=max_frames)


def clip_track(clip: Clip, max_frames: int = MAX_FRAMES, cache: Path = CACHE) -> tuple[np.ndarray, np.ndarray]:
    """(T, 68, 2) landmarks (lost frames held) and (T,) valid of the clip's first frames,
    tracked with the project's tracker at the clip's own resolution; cached as .npz."""
    from talkinghead.data.landmarks import get_detector, track_landmarks
    from talkinghead.infer.driving import hold_lost_frames

    file = cache / f"{clip.name}_{max_frames}.npz"
    if file.exists():
        data = np.load(file)
        return data["landmarks"], data["valid"]
    marks, valid, _ = track_landmarks(clip_frames(clip, max_frames), get_detector("dlib"))
    valid = np.asarray(valid, bool)
    filled, _ = hold_lost_frames(np.where(valid[:, None, None], marks, np.nan))
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(file, landmarks=filled, valid=valid)
    return filled, valid


def mouth_opening(landmarks: np.ndarray) -> np.ndarray:
    from talkinghead.infer.reenact import mouth_opening as opening

    return opening(np.asarray(landmarks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", default="dev")
    parser.add_argument("--clips", type=int, default=0, help="only the first N clips (0: all)")
    args = parser.parse_args()
    clips = split_clips(args.split)
    for clip in clips[:args.clips] if args.clips else clips:
        marks, valid = clip_track(clip)
        gap = mouth_opening(marks)
        print(f"{clip.name:24s} {len(marks):4d} frames, valid {valid.mean():.2f}, "
              f"mouth opening {gap.min():.2f}–{gap.max():.2f}")


if __name__ == "__main__":
    main()
