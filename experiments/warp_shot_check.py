"""What passing over shots with guessed landmarks changes: the warp guide with and without it.

    python experiments/warp_shot_check.py --data data/faces128                      # K = 8 and 32
    python experiments/warp_shot_check.py --data data/faces128 --strip docs/shot_check.png

For every dev video of the bundled split, the evaluation protocol's shots and targets
(:mod:`talkinghead.eval.protocol`) are taken; each shot's landmarks are refitted by dlib's shape
predictor (:func:`talkinghead.data.landmarks.landmark_refit_error`), and each target is predicted
by the warp guide (``--fuse`` nearest shots, 2 as in the bundled model; 1: the classical warp)
twice: shots picked by landmark distance alone, and with shots whose refit lands far from their
landmarks passed over (:meth:`talkinghead.models.guide.WarpGuide.unreliable_shot_penalty`, what a warp-guided
avatar does). Both are scored as ``evaluate`` scores them (SSIM, PSNR, CSIM, NME, face found).
Videos where no shot is penalised are identical by construction and only counted. ``--strip``
draws, for the video where the check changed most targets at the first K: the real targets, the
plain guide and the checked guide.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from harness import WarpComparison, clips, parser, protocol_samples, write_strip

from talkinghead.data.landmarks import get_detector, landmark_refit_error
from talkinghead.models.guide import WarpGuide
from talkinghead.eval.protocol import Scorer, classical_warp


def main() -> None:
    ap = parser(__doc__, shots=(8, 32))
    ap.add_argument("--fuse", type=int, default=2, help="shots the guide fuses (the bundled model: 2)")
    ap.add_argument("--strip", type=Path, help="write a picture of the most changed video (PNG)")
    args = ap.parse_args()

    videos = clips(args)
    scorer, detector = Scorer(), get_detector("dlib")
    best = None  # (changed targets, rows of the strip)
    for k in args.shots:
        comparison = WarpComparison(scorer, "plain", "checked")
        flagged_videos = refit_seconds = refits = 0
        for video, shots, targets in protocol_samples(videos, k, args.targets, None):
            start = time.perf_counter()
            error = landmark_refit_error(shots.crops, shots.landmarks, detector)
            refit_seconds, refits = refit_seconds + time.perf_counter() - start, refits + len(error)
            penalty = WarpGuide().unreliable_shot_penalty(torch.from_numpy(error)).numpy()
            plain = classical_warp(shots, targets.landmarks, fuse=args.fuse)
            checked = classical_warp(shots, targets.landmarks, fuse=args.fuse, penalty=penalty)
            changed, rows = comparison.add(plain, checked, targets)
            if (penalty > 0).any():
                flagged_videos += 1
                found = [int(sum(rows[n]["face_found"])) for n in ("plain", "checked")]
                ssim = [np.mean(rows[n]["ssim"]) for n in ("plain", "checked")]
                print(f"K={k:<3d}{video.key:36s} {int((penalty > 0).sum())}/{k} shots penalised, "
                      f"{int(changed.sum())}/{len(changed)} targets changed; face found {found[0]} → {found[1]}, "
                      f"SSIM {ssim[0]:.4f} → {ssim[1]:.4f}", flush=True)
                if args.strip and k == args.shots[0] and (best is None or changed.sum() > best[0]):
                    best = (int(changed.sum()), [targets.crops, plain, checked])
        print(f"K = {k}: shots penalised in {flagged_videos} videos, {comparison.changed_targets} targets changed; "
              f"refit {1000 * refit_seconds / max(refits, 1):.1f} ms per shot")
        comparison.print_summary()
    if args.strip and best is not None:
        write_strip(args.strip, best[1], "real target, plain guide, checked guide")


if __name__ == "__main__":
    main()
