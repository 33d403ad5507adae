"""CPU time per frame of ``animate`` at output sizes, paste-back included, on ONE thread.

    python benchmarks/cpu_per_frame.py 128 256 512

On a shared, loaded machine wall-clock frames/s say little; the process's CPU time per frame on
one thread depends much less on the load. To compare two versions, run both in one session, e.g.
``for s in 128 256 512; do for src in OLD/src NEW/src; do PYTHONPATH=$src python
benchmarks/cpu_per_frame.py $s; done; done``. Same set-up as ``benchmarks/infer.py
--output-sizes`` (bundled model, synthetic shots, K = 1 and 8, a photo 1.5× the output size).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sizes", nargs="+", type=int)
    ap.add_argument("--frames", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from talkinghead.data.synthetic import procedural_track, render_synthetic_face
    from talkinghead.infer.avatar import Avatar
    from talkinghead.infer.bundled import BUNDLED_CHECKPOINT
    from talkinghead.infer.driving import paste_frame

    for size in args.sizes:
        row = []
        for shots in (1, 8):
            track = procedural_track(128, frames=max(args.frames, 16))
            crops = np.stack([render_synthetic_face(l, 128) for l in track[:shots]])
            crops_hi = np.stack([render_synthetic_face(l * size / 128, size) for l in track[:shots]])
            avatar = Avatar.from_crops(crops, track[:shots], BUNDLED_CHECKPOINT, finetune_steps=0, progress=False,
                                       crops_hi=crops_hi)
            photo = np.full((size * 3 // 2, size * 3 // 2, 3), 128, np.uint8)
            avatar.source_image, avatar.source_box = photo, np.array([size * 0.75] * 2 + [size], np.float32)
            avatar.animate(track[:16], progress=False, size=size)  # warm-up
            cpu = time.process_time()
            frames = avatar.animate(track[:args.frames], progress=False, size=size)
            for t in range(args.frames):
                paste_frame(avatar, frames[t], track[t])
            row.append(f"K={shots}: {1000 * (time.process_time() - cpu) / args.frames:.1f}")
        load = " ".join(f"{v:.1f}" for v in os.getloadavg())
        print(f"{size} px  {'  '.join(row)} CPU ms/frame (1 thread, paste-back included)  load {load}", flush=True)


if __name__ == "__main__":
    main()
