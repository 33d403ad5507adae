"""What cross-fading between shots on consecutive frames does to the jitter figure.

    python benchmarks/shot_crossfade.py --data data/faces128            # K = 8 and 32, FF

For every dev video of the bundled split, the bundled model builds the evaluation protocol's
avatar from its K shots (FF: no fine-tuning, so the two runs differ only in the shot choice) and
renders its jitter run — 24 consecutive frames, driving landmarks One-Euro smoothed, as
``evaluate`` does — twice: each frame ranking the shots by its own landmark distances
(``consecutive=False``) and by their moving average (:data:`talkinghead.data.warp.SHOT_SMOOTHING`,
what ``animate`` and ``live`` do). Prints the mean jitter ratio of each (dlib's landmarks on the
output, acceleration ÷ the real frames'; lower is steadier) and the per-video figures.
"""

from __future__ import annotations

import argparse

import numpy as np

from talkinghead.checkpoint import load_checkpoint
from talkinghead.data.episodes import load_videos
from talkinghead.eval.protocol import JITTER_FPS, Scorer, jitter_frames, load_samples, select_frames
from talkinghead.eval.splits import load_split
from talkinghead.infer.avatar import Avatar
from talkinghead.infer.bundled import resolve_checkpoint
from talkinghead.infer.smoothing import smooth_landmarks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="data set prepared by `talkinghead prepare`")
    ap.add_argument("--split-file", default="faces")
    ap.add_argument("--shots", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--checkpoint", default=None, help="meta checkpoint (default: the bundled model)")
    args = ap.parse_args()

    checkpoint = load_checkpoint(resolve_checkpoint(args.checkpoint))
    size = checkpoint.config.model.image_size
    videos = load_videos(args.data, load_split(args.split_file)["dev"], min_frames=1)
    scorer = Scorer()
    for k in args.shots:
        jitter = {"per frame": [], "cross-faded": []}
        for video in videos:
            picks = select_frames(len(video.frames), k, 8)
            if picks is None:
                continue
            shots = load_samples(video, picks[0], size)
            run = load_samples(video, jitter_frames(len(video.frames)), size)
            drive = smooth_landmarks(run.landmarks, JITTER_FPS)
            avatar = Avatar.from_crops(shots.crops, shots.landmarks, checkpoint, finetune_steps=0, progress=False)
            for name, consecutive in (("per frame", False), ("cross-faded", True)):
                frames = avatar.animate(drive, progress=False, consecutive=consecutive)
                jitter[name].append(scorer.jitter(frames, run.landmarks))
            print(f"K={k:<3d}{video.key:36s} jitter {jitter['per frame'][-1]:.3f} → {jitter['cross-faded'][-1]:.3f}",
                  flush=True)
        better = int(np.sum(np.array(jitter["cross-faded"]) < np.array(jitter["per frame"])))
        print(f"K = {k}: mean jitter, shots chosen per frame {np.mean(jitter['per frame']):.4f}, cross-faded "
              f"{np.mean(jitter['cross-faded']):.4f} (steadier in {better} of {len(jitter['per frame'])} videos)")


if __name__ == "__main__":
    main()
