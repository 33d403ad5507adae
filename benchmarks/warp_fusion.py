"""How much the fused guide (``model.warp_shots``) gives before any learning.

    python benchmarks/warp_fusion.py --data data/faces128                 # dev split, K = 1 8 32
    python benchmarks/warp_fusion.py --data data/faces128 --fuse 1 2 3 5

For every dev video of the bundled split and every K, the evaluation protocol's shots and
targets (:mod:`talkinghead.eval.protocol`) are taken, and each target is predicted by the
guide alone: the ``fuse`` nearest shots warped onto its landmarks and averaged by landmark
distance (:func:`talkinghead.data.warp.warp_guide`; ``fuse`` = 1 is the classical warp row of
``evaluate``). Prints mean SSIM, PSNR and sharpness (output ÷ real) per (K, fuse): the gain of
fusion alone, which the warp-guided G's figures in ``evaluate`` should be read against.
"""

from __future__ import annotations

import argparse

import numpy as np

from talkinghead.data.episodes import load_videos
from talkinghead.eval.metrics import image_scores
from talkinghead.eval.protocol import classical_warp, load_samples, select_frames
from talkinghead.eval.splits import load_split


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="data set prepared by `talkinghead prepare`")
    ap.add_argument("--split-file", default="faces")
    ap.add_argument("--shots", nargs="+", type=int, default=[1, 8, 32])
    ap.add_argument("--fuse", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--targets", type=int, default=8)
    ap.add_argument("--size", type=int, default=128, help="crop size (the model's image size)")
    args = ap.parse_args()

    videos = load_videos(args.data, load_split(args.split_file)["dev"], min_frames=1)
    scores: dict[tuple[int, int], list[tuple[float, float, float]]] = {}
    for k in args.shots:
        for video in videos:
            picks = select_frames(len(video.frames), k, args.targets)
            if picks is None:
                continue
            shots, target = load_samples(video, picks[0], args.size), load_samples(video, picks[1], args.size)
            for fuse in args.fuse:
                out = classical_warp(shots, target.landmarks, fuse=fuse)
                scores.setdefault((k, fuse), []).extend(
                    image_scores(g, r, lm) for g, r, lm in zip(out, target.crops, target.landmarks))
    print(f"# fused warp guide without learning: {len(videos)} dev videos of {args.data}, "
          f"{args.targets} targets each\n")
    print("| K | fused shots | SSIM | PSNR | sharpness | targets |")
    print("|---:|---:|---:|---:|---:|---:|")
    for (k, fuse), rows in scores.items():
        s, p, sh = np.mean(np.asarray(rows, np.float64), axis=0)
        print(f"| {k} | {fuse} | {s:.3f} | {p:.2f} | {sh:.2f} | {len(rows)} |")


if __name__ == "__main__":
    main()
