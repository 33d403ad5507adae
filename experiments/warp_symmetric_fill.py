"""What the warp's symmetric fill changes: the classical warp with and without it, on the dev split.

    python experiments/warp_symmetric_fill.py --data data/faces128                 # K = 1
    python experiments/warp_symmetric_fill.py --data data/faces128 --shots 1 8 32 --strip docs/profile_fill.png

For every dev video of the bundled split, the evaluation protocol's shots and targets
(:mod:`talkinghead.eval.protocol`) are taken and each target is predicted by the classical warp
twice: plain piecewise-affine, and with the triangles the shot hides filled from their mirror
images (:data:`talkinghead.data.warp.OCCLUSION_MAGNIFICATION`). Both are scored as ``evaluate``
scores them (SSIM, PSNR, CSIM, NME, face found). Videos where the fill changes nothing are
identical by construction and only counted. ``--strip`` draws, for the video where the fill
changed most targets at the first K: its shot, the real targets, the plain warp and the filled warp.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from harness import WarpComparison, clips, parser, protocol_samples, write_strip

from talkinghead.eval.protocol import Scorer, classical_warp


def main() -> None:
    ap = parser(__doc__, shots=(1,))
    ap.add_argument("--strip", type=Path, help="write a picture of the most changed video (PNG)")
    args = ap.parse_args()

    videos = clips(args)
    scorer = Scorer()
    best = None  # (changed targets, rows of the strip)
    for k in args.shots:
        comparison = WarpComparison(scorer, "plain", "filled")
        for video, shots, targets in protocol_samples(videos, k, args.targets, None):
            plain = classical_warp(shots, targets.landmarks, symmetric_fill=False)
            filled = classical_warp(shots, targets.landmarks)
            changed, rows = comparison.add(plain, filled, targets)
            if changed.any():
                found = [int(sum(rows[n]["face_found"])) for n in ("plain", "filled")]
                print(f"K={k:<3d}{video.key:36s} fill changed {int(changed.sum())}/{len(changed)} targets; "
                      f"face found {found[0]} → {found[1]}", flush=True)
                if args.strip and k == args.shots[0] and (best is None or changed.sum() > best[0]):
                    shot = np.repeat(shots.crops[:1], len(changed), 0)
                    best = (int(changed.sum()), [shot, targets.crops, plain, filled])
        print(f"K = {k}: the fill changed {comparison.changed_targets} targets in {comparison.changed_videos} videos")
        comparison.print_summary()
    if args.strip and best is not None:
        write_strip(args.strip, best[1], "shot, real target, plain warp, filled warp")


if __name__ == "__main__":
    main()
