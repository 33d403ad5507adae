"""Landmark warping speed: ms per frame of the piecewise-affine warp (with the rigid-background
head masks), at 128 and 256 px, batch 1 and batched; without the symmetric fill, with it on
ordinary faces (it checks and finds nothing hidden), and with it filling a profile's hidden side.

    python benchmarks/warp.py                 # CPU, the torch threads of this machine
    python benchmarks/warp.py --device cuda

Real landmark pairs: frame 0 of the bundled driving track warped onto its other frames; for the
profile case, frame 0 with its left half squeezed onto the nose line (as dlib marks a profile).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from talkinghead.data.crop import square_box_from_landmarks
from talkinghead.data.synthetic import turned_to_profile
from talkinghead.data.warp import warp_image

TRACK = Path(__file__).resolve().parents[1] / "src" / "talkinghead" / "assets" / "demo_track.npy"


def landmark_pairs(size: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    track = np.load(TRACK)
    cx, cy, side = square_box_from_landmarks(track[0])
    crop = (track - [cx - side / 2, cy - side / 2]) / side * size
    idx = np.arange(count) % (len(track) - 1) + 1
    return (torch.tensor(np.repeat(crop[:1], count, 0), dtype=torch.float32),
            torch.tensor(crop[idx], dtype=torch.float32))


def ms_per_frame(image, source, target, batch: int, fill: bool, cuda: bool) -> float:
    frames = image.shape[0]
    warp_image(image[:batch], source[:batch], target[:batch], symmetric_fill=fill)  # warm-up
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, frames, batch):
            sl = slice(start, start + batch)
            warp_image(image[sl], source[sl], target[sl], symmetric_fill=fill)
    if cuda:
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - t0) / frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", nargs="+", type=int, default=[128, 256])
    ap.add_argument("--frames", type=int, default=64)
    args = ap.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    name = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"# landmark warp benchmark on {name} (torch {torch.__version__})\n")
    print("| size | batch | no fill ms/frame | frames/s | fill, ordinary faces | ratio | fill, profile source | ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        source, target = landmark_pairs(size, args.frames)
        image = torch.rand(args.frames, 3, size, size)
        source, target, image = source.to(device), target.to(device), image.to(device)
        profile = torch.from_numpy(turned_to_profile(source.cpu().numpy())).to(device)
        for batch in (1, 16):
            plain = ms_per_frame(image, source, target, batch, False, cuda)
            checked = ms_per_frame(image, source, target, batch, True, cuda)
            filled = ms_per_frame(image, profile, target, batch, True, cuda)
            print(f"| {size} | {batch} | {plain:.1f} | {1000 / plain:.0f} | {checked:.1f} | {checked / plain:.2f} "
                  f"| {filled:.1f} | {filled / plain:.2f} |", flush=True)


if __name__ == "__main__":
    main()
