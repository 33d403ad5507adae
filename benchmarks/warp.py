"""Landmark warping speed: ms per frame of the piecewise-affine warp (with the rigid-background
head masks), at 128 and 256 px, batch 1 and batched.

    python benchmarks/warp.py                 # CPU, the torch threads of this machine
    python benchmarks/warp.py --device cuda

Real landmark pairs: frame 0 of the bundled driving track warped onto its other frames.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from talkinghead.data.crop import square_box_from_landmarks
from talkinghead.data.warp import warp_image

TRACK = Path(__file__).resolve().parents[1] / "src" / "talkinghead" / "assets" / "demo_track.npy"


def landmark_pairs(size: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    track = np.load(TRACK)
    cx, cy, side = square_box_from_landmarks(track[0])
    crop = (track - [cx - side / 2, cy - side / 2]) / side * size
    idx = np.arange(count) % (len(track) - 1) + 1
    return (torch.tensor(np.repeat(crop[:1], count, 0), dtype=torch.float32),
            torch.tensor(crop[idx], dtype=torch.float32))


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
    print("| size | batch | ms/frame | frames/s |")
    print("|---:|---:|---:|---:|")
    for size in args.sizes:
        source, target = landmark_pairs(size, args.frames)
        image = torch.rand(args.frames, 3, size, size)
        source, target, image = source.to(device), target.to(device), image.to(device)
        for batch in (1, 16):
            warp_image(image[:batch], source[:batch], target[:batch])  # warm-up
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            with torch.inference_mode():
                for start in range(0, args.frames, batch):
                    warp_image(image[start:start + batch], source[start:start + batch], target[start:start + batch])
            if cuda:
                torch.cuda.synchronize()
            dt = (time.perf_counter() - t0) / args.frames
            print(f"| {size} | {batch} | {1000 * dt:.1f} | {1 / dt:.0f} |", flush=True)


if __name__ == "__main__":
    main()
