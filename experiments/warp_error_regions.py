"""Where the classical warp's error lies, and what softening each region would change.

    python experiments/warp_error_regions.py --data data/faces128              # dev split, K = 1
    python experiments/warp_error_regions.py --data data/faces128 --shots 8

For every dev video of the bundled split, the evaluation protocol's shots and targets
(:mod:`talkinghead.eval.protocol`) are taken and each target is predicted by the classical warp
(the nearest shot warped onto its landmarks). Prints, per video, the mean absolute error (0–255
levels) inside and outside the target's head mask (:func:`talkinghead.data.warp.head_mask`), and
then SSIM / PSNR / sharpness of the warp with a Gaussian blur of σ px applied inside or outside
that mask only: an upper bound on what hedging (softening what one shot cannot know) buys on
these metrics, which a G trained on the content loss alone learns to do.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from harness import clips, parser, print_table, protocol_samples

from talkinghead.data.warp import head_mask
from talkinghead.eval.metrics import image_scores
from talkinghead.eval.protocol import classical_warp


def gaussian_blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """(T, S, S, 3) uint8 → the same, each blurred by a Gaussian of ``sigma`` pixels."""
    return np.stack([cv2.GaussianBlur(im, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE) for im in images])


def mean_scores(out: np.ndarray, real: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Mean (SSIM, PSNR, sharpness) over frames (:func:`~talkinghead.eval.metrics.image_scores`)."""
    return np.mean([image_scores(o, r, l) for o, r, l in zip(out, real, landmarks)], axis=0)


def main() -> None:
    ap = parser(__doc__, shots=(1,))
    ap.add_argument("--sigmas", nargs="+", type=float, default=[0.7, 1.5, 3.0])
    args = ap.parse_args()

    (k,) = args.shots
    variants: dict[str, list[np.ndarray]] = {}
    for video, shots, targets in protocol_samples(clips(args), k, args.targets, None):
        warped = classical_warp(shots, targets.landmarks)
        side = warped.shape[1]
        mask = head_mask(torch.from_numpy(targets.landmarks).float(), side).numpy()[:, 0, :, :, None]
        err = np.abs(warped.astype(np.float64) - targets.crops).mean(-1, keepdims=True)
        inside, outside = (err * mask).sum() / mask.sum(), (err * (1 - mask)).sum() / (1 - mask).sum()
        print(f"{video.key:40s} |error| head {inside:5.1f}  background {outside:5.1f}", flush=True)
        variants.setdefault("warp", []).append(mean_scores(warped, targets.crops, targets.landmarks))
        for sigma in args.sigmas:
            blurred = gaussian_blur(warped, sigma).astype(np.float64)
            for name, m in ((f"blur σ={sigma} inside the head", mask), (f"blur σ={sigma} outside the head", 1 - mask)):
                out = (m * blurred + (1 - m) * warped).round().astype(np.uint8)
                variants.setdefault(name, []).append(mean_scores(out, targets.crops, targets.landmarks))
    print()
    print_table(("variant", "SSIM", "PSNR", "sharpness"),
                [(name, *np.mean(rows, axis=0).tolist()) for name, rows in variants.items()],
                f"K = {k}, {len(variants.get('warp', []))} videos: the classical warp blurred by region")


if __name__ == "__main__":
    main()
