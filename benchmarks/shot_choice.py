"""Ways of choosing the guide's shots on consecutive frames, tried against the jitter figure.

    python benchmarks/shot_choice.py --data data/faces128 --split train --videos 16

For each video (``--videos`` drawn with seed 0 from ``--split``; run on training identities so
that nothing is tuned on dev), the bundled model builds the evaluation protocol's FF avatar from
its K shots and renders, with each variant, the jitter run (consecutive frames, driving
landmarks One-Euro smoothed, as ``evaluate`` does) and the 8 targets (one by one). Prints per
variant the mean jitter ratio and its per-video difference from the first variant (± standard
error), the SSIM of the run's frames and of the targets. ``--variants shipped --checkpoint X``
scores another meta checkpoint as ``animate`` would use it. Variants:

* ``shipped``: what ``animate`` does (passes over shots with guessed landmarks: a profile's
  refit error, a hidden mouth's loose fit, see ``data.warp.hidden_mouth_penalty``; cross-fade
  0.25; the two nearest shots fused by a softmax of their distances).
* ``refit-only``: the rule before the hidden-mouth check (refit error only).
* ``flat-spread``: refit error + 0.5 × (mouth fit spread − 0.015)⁺, with no allowance for the
  clip's own level or the head's yaw: it finds the hand shots, but fires as much on turned
  heads and soft video.
* ``dedup``: of any two shots closer than 0.015 in landmark distance, only one can be chosen
  (fewer switches between near-identical photos).
* ``continuous``: top-2 weights that fall to zero as a shot leaves the top two
  (wᵢ ∝ e^(−dᵢ/T) − e^(−d₃/T)), so a change of second shot is not a cut of its share.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import talkinghead.infer.avatar as avatar_module
from talkinghead.checkpoint import load_checkpoint
from talkinghead.data.landmarks import get_detector, landmark_refit_error, mouth_fit_spread
from talkinghead.data.warp import (FUSION_TEMPERATURE, fuse_warped_shots, shot_distances, unreliable_shot_penalty,
                                   warp_guide)
from talkinghead.errors import TalkingHeadError
from talkinghead.eval.metrics import ssim
from talkinghead.eval.protocol import Scorer, jitter_run, jitter_videos, load_samples, select_frames
from talkinghead.eval.splits import load_split
from talkinghead.infer.avatar import Avatar
from talkinghead.infer.bundled import resolve_checkpoint

DEDUP_DISTANCE = 0.015
FLAT_SPREAD_FLOOR, FLAT_SPREAD_WEIGHT = 0.015, 0.5
VARIANTS = ("shipped", "refit-only", "flat-spread", "dedup", "continuous")


def dedup_penalty(landmarks: np.ndarray, penalty: torch.Tensor) -> torch.Tensor:
    """(K,) penalty with +10 on every shot within DEDUP_DISTANCE of a kept one (kept: reliable first)."""
    marks = torch.from_numpy(landmarks).float()
    distance = shot_distances(marks[None].expand(len(marks), -1, -1, -1), marks)  # (K, K)
    kept = []
    for i in sorted(range(len(marks)), key=lambda i: (float(penalty[i]), i)):
        if all(float(distance[i, j]) > DEDUP_DISTANCE for j in kept):
            kept.append(i)
    out = penalty + 10.0
    out[kept] = penalty[kept]
    return out


def continuous_guide(shots, shot_landmarks, target_landmarks, exclude=None, fuse=1, symmetric_fill=True,
                     penalty=None):
    """:func:`warp_guide` with top-M weights that reach 0 where a shot leaves the top M."""
    k = shots.shape[1]
    m = max(1, min(int(fuse), k))
    if m == 1 or k == m:
        return warp_guide(shots, shot_landmarks, target_landmarks, exclude, fuse, symmetric_fill, penalty)
    distance = shot_distances(shot_landmarks, target_landmarks, exclude, penalty)
    nearest, pick = torch.topk(distance, m + 1, dim=1, largest=False)
    relative = torch.exp(-(nearest - nearest[:, :1]) / FUSION_TEMPERATURE)
    weight = (relative[:, :m] - relative[:, m:]).clamp(min=0)
    weight[:, 0] += 1e-6  # a three-way tie: the nearest alone
    weight = (weight / weight.sum(1, keepdim=True)).to(shots.dtype)
    return fuse_warped_shots(shots, shot_landmarks, target_landmarks, pick[:, :m], weight, symmetric_fill)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="data set prepared by `talkinghead prepare`")
    ap.add_argument("--split-file", default="faces")
    ap.add_argument("--split", default="train", help="which identities of the split file")
    ap.add_argument("--videos", type=int, default=16, help="draw this many videos (seed 0); 0: all")
    ap.add_argument("--video", default=None, help="only this video key (of --split)")
    ap.add_argument("--shots", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--checkpoint", default=None, help="meta checkpoint (default: the bundled model)")
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    args = ap.parse_args()

    checkpoint = load_checkpoint(resolve_checkpoint(args.checkpoint))
    size = checkpoint.config.model.image_size
    try:
        videos = jitter_videos(args.data, load_split(args.split_file)[args.split], args.videos, args.video)
    except TalkingHeadError as error:
        raise SystemExit(f"error: {error}") from None
    scorer, detector = Scorer(), get_detector("dlib")
    variants = args.variants
    for k in args.shots:
        jitter, run_ssim, target_ssim = ({v: [] for v in variants} for _ in range(3))
        for video in videos:
            picks = select_frames(len(video.frames), k, 8)
            if picks is None:
                continue
            shots, targets = load_samples(video, picks[0], size), load_samples(video, picks[1], size)
            run, drive = jitter_run(video, size)
            avatar = Avatar.from_crops(shots.crops, shots.landmarks, checkpoint, finetune_steps=0, progress=False)
            renderer = avatar.renderer()
            shipped = renderer.shot_penalty.clone()
            penalties = {}
            if "dedup" in variants:
                penalties["dedup"] = dedup_penalty(shots.landmarks, shipped)
            if {"refit-only", "flat-spread"} & set(variants):
                refit = unreliable_shot_penalty(torch.from_numpy(
                    landmark_refit_error(shots.crops, shots.landmarks, detector)))
                spread = torch.from_numpy(mouth_fit_spread(shots.crops, shots.landmarks, detector))
                penalties["refit-only"] = refit
                penalties["flat-spread"] = refit + FLAT_SPREAD_WEIGHT * (spread - FLAT_SPREAD_FLOOR).clamp(min=0)
            for variant in variants:
                renderer.shot_penalty.copy_(penalties.get(variant, shipped))
                # the renderer looks warp_guide up in its module: swap it for this variant only
                avatar_module.warp_guide = continuous_guide if variant == "continuous" else warp_guide
                try:
                    frames = avatar.animate(drive, progress=False)
                    singles = avatar.animate(targets.landmarks, progress=False, consecutive=False)
                finally:
                    avatar_module.warp_guide = warp_guide
                jitter[variant].append(scorer.jitter(frames, run.landmarks))
                run_ssim[variant].append(float(np.mean(ssim(frames, run.crops))))
                target_ssim[variant].append(float(np.mean(ssim(singles, targets.crops))))
            print(f"K={k:<3d}{video.key:36s} jitter " + "  ".join(f"{v} {jitter[v][-1]:.3f}" for v in variants),
                  flush=True)
        base = np.array(jitter[variants[0]])
        for variant in variants:
            diff = np.array(jitter[variant]) - base
            error = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else 0.0
            print(f"K = {k}, {variant:10s}: jitter {np.mean(jitter[variant]):.4f} ({diff.mean():+.4f} ± {error:.4f}, "
                  f"lower in {int(np.sum(diff < 0))} of {len(diff)}), SSIM run {np.mean(run_ssim[variant]):.4f}, "
                  f"targets {np.mean(target_ssim[variant]):.4f}")


if __name__ == "__main__":
    main()
