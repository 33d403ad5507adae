"""How much the fused guide (``model.warp_shots``) gives before any learning.

    python experiments/warp_fusion.py --data data/faces128                 # dev split, K = 1 8 32
    python experiments/warp_fusion.py --data data/faces128 --fuse 1 2 3 5

For every dev video of the bundled split and every K, the evaluation protocol's shots and
targets (:mod:`talkinghead.eval.protocol`) are taken, and each target is predicted by the
guide alone: the ``fuse`` nearest shots warped onto its landmarks and averaged by landmark
distance (:class:`talkinghead.models.guide.WarpGuide`; ``fuse`` = 1 is the classical warp row of
``evaluate``). Prints mean SSIM, PSNR and sharpness (output ÷ real) per (K, fuse): the gain of
fusion alone, which the warp-guided G's figures in ``evaluate`` should be read against.
"""

from __future__ import annotations

import numpy as np
from harness import clips, parser, print_table, protocol_samples

from talkinghead.eval.metrics import image_scores
from talkinghead.eval.protocol import classical_warp


def main() -> None:
    ap = parser(__doc__, shots=(1, 8, 32))
    ap.add_argument("--fuse", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--size", type=int, default=128, help="crop size (the model's image size)")
    args = ap.parse_args()

    videos = clips(args)
    scores: dict[tuple[int, int], list[tuple[float, float, float]]] = {}
    for k in args.shots:
        for _video, shots, target in protocol_samples(videos, k, args.targets, args.size):
            for fuse in args.fuse:
                out = classical_warp(shots, target.landmarks, fuse=fuse)
                scores.setdefault((k, fuse), []).extend(
                    image_scores(g, r, lm) for g, r, lm in zip(out, target.crops, target.landmarks))
    rows = [(k, fuse, *np.mean(np.asarray(r, np.float64), axis=0).tolist(), len(r)) for (k, fuse), r in scores.items()]
    print_table(("K", "fused shots", "SSIM", "PSNR", "sharpness", "targets"), rows,
                f"fused warp guide without learning: {len(videos)} {args.split} videos of {args.data}")


if __name__ == "__main__":
    main()
