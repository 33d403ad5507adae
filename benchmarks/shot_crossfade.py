"""What cross-fading between shots on consecutive frames does to the jitter figure.

    python benchmarks/shot_crossfade.py --data data/faces128            # K = 8 and 32, FF, dev
    python benchmarks/shot_crossfade.py --data data/faces128 --split train --videos 16 --rates 0.25 0.1 0.06

For every dev video of the bundled split (or ``--videos`` videos drawn from another split), the
bundled model builds the evaluation protocol's avatar from its K shots (FF: no fine-tuning, so the
runs differ only in the shot choice) and renders its jitter run — ``JITTER_FRAMES`` consecutive
frames, driving landmarks One-Euro smoothed, as ``evaluate`` does — with each frame ranking the
shots by its own landmark distances (``consecutive=False``) and by their moving average at each
of ``--rates`` (weight on the newest frame; :data:`talkinghead.data.warp.SHOT_SMOOTHING` is what
``animate`` and ``live`` use). Prints, per rate, the mean jitter ratio (dlib's landmarks on the
output, acceleration ÷ the real frames'; lower is steadier; the instrument of ``evaluate``) and
the mean SSIM of the run's frames against the real ones (what a shot lagging the pose costs).
"""

from __future__ import annotations

import argparse

import numpy as np

from talkinghead.checkpoint import load_checkpoint
from talkinghead.data.warp import SHOT_SMOOTHING
from talkinghead.eval.metrics import ssim
from talkinghead.eval.protocol import Scorer, jitter_run, jitter_videos, load_samples, select_frames
from talkinghead.eval.splits import load_split
from talkinghead.infer.avatar import Avatar
from talkinghead.infer.bundled import resolve_checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="data set prepared by `talkinghead prepare`")
    ap.add_argument("--split-file", default="faces")
    ap.add_argument("--split", default="dev", help="which identities of the split file")
    ap.add_argument("--videos", type=int, default=0, help="draw this many videos (seed 0); 0: all")
    ap.add_argument("--shots", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--rates", type=float, nargs="+", default=[SHOT_SMOOTHING])
    ap.add_argument("--checkpoint", default=None, help="meta checkpoint (default: the bundled model)")
    args = ap.parse_args()

    checkpoint = load_checkpoint(resolve_checkpoint(args.checkpoint))
    size = checkpoint.config.model.image_size
    videos = jitter_videos(args.data, load_split(args.split_file)[args.split], args.videos)
    scorer = Scorer()
    settings = {"per frame": None, **{f"rate {r:g}": r for r in args.rates}}
    for k in args.shots:
        jitter = {name: [] for name in settings}
        fidelity = {name: [] for name in settings}
        for video in videos:
            picks = select_frames(len(video.frames), k, 8)
            if picks is None:
                continue
            shots = load_samples(video, picks[0], size)
            run, drive = jitter_run(video, size)
            avatar = Avatar.from_crops(shots.crops, shots.landmarks, checkpoint, finetune_steps=0, progress=False)
            for name, rate in settings.items():
                frames = avatar.animate(drive, progress=False, consecutive=rate is not None,
                                        shot_smoothing=rate or 1.0)
                jitter[name].append(scorer.jitter(frames, run.landmarks))
                fidelity[name].append(float(np.mean(ssim(frames, run.crops))))
            print(f"K={k:<3d}{video.key:36s} jitter " + "  ".join(f"{n} {jitter[n][-1]:.3f}" for n in settings),
                  flush=True)
        base = np.array(jitter["per frame"])
        for name in settings:
            values = np.array(jitter[name])
            print(f"K = {k}, {name:10s}: mean jitter {values.mean():.4f} (steadier than per frame in "
                  f"{int(np.sum(values < base))} of {len(base)} videos), SSIM of the run {np.mean(fidelity[name]):.4f}")


if __name__ == "__main__":
    main()
