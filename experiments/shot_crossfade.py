"""What cross-fading between shots on consecutive frames does to the jitter figure.

    python experiments/shot_crossfade.py --data data/faces128            # K = 8 and 32, FF, dev
    python experiments/shot_crossfade.py --data data/faces128 --split train --videos 16 --rates 0.25 0.1 0.06

For every dev video of the bundled split (or ``--videos`` videos drawn from another split), the
bundled model builds the evaluation protocol's avatar from its K shots (FF: no fine-tuning, so the
runs differ only in the shot choice) and renders its jitter run — ``JITTER_FRAMES`` consecutive
frames, driving landmarks One-Euro smoothed, as ``evaluate`` does — with each frame ranking the
shots by its own landmark distances (``consecutive=False``) and by their moving average at each
of ``--rates`` (weight on the newest frame; ``guide.shot_smoothing`` is what
``animate`` and ``live`` use). Prints, per rate, the mean jitter ratio (dlib's landmarks on the
output, acceleration ÷ the real frames'; lower is steadier; the instrument of ``evaluate``) and
the mean SSIM of the run's frames against the real ones (what a shot lagging the pose costs).
"""

from __future__ import annotations

import numpy as np
from harness import jitter_clips, model, parser, protocol_samples

from talkinghead.config import GuideConfig
from talkinghead.eval.metrics import ssim
from talkinghead.eval.protocol import Scorer, jitter_run
from talkinghead.infer.avatar import Avatar


def main() -> None:
    ap = parser(__doc__, shots=(8, 32), checkpoint=True)
    ap.add_argument("--rates", type=float, nargs="+", default=[GuideConfig().shot_smoothing])
    args = ap.parse_args()

    checkpoint = model(args)
    size = checkpoint.config.model.image_size
    videos = jitter_clips(args)
    scorer = Scorer()
    settings = {"per frame": None, **{f"rate {r:g}": r for r in args.rates}}
    for k in args.shots:
        jitter = {name: [] for name in settings}
        fidelity = {name: [] for name in settings}
        for video, shots, _targets in protocol_samples(videos, k, args.targets, size):
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
