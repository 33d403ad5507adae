"""Pictures of the mouth's inside: portraits driven by the bundled demo track, at the driver's
widest-open frames, pasted back into the portrait and cut around the face at the portrait's own
resolution. Row 1: the guide and generator as they were (no distrust, no interior); row 2: the
distrusted guide with the interior drawn by rules; row 3: the default (distrusted guide, the
mouth generator's interior).

    python benchmarks/mouth_strips.py --out docs/               # astronaut, Einstein, Mona Lisa
    python benchmarks/mouth_strips.py --steps 0 --frames 4 --out /tmp/strips
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

PORTRAITS = {"astronaut": None, "einstein": "/work/shared/data/faces/images/einstein.jpg",
             "mona_lisa": "/work/shared/data/faces/images/mona_lisa.jpg"}


def strip(avatar, adapted: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """Three rows (before | drawn | default) of the pasted-back face boxes for frames ``picks``."""
    import cv2

    from talkinghead.infer.driving import paste_frame

    mouth = avatar.config.mouth
    default = mouth.interior
    rows = []
    for distrust, draw, interior in ((False, False, default), (True, True, "drawn"), (True, True, default)):
        mouth.guide_distrust, mouth.draw_interior, mouth.interior = distrust, draw, interior
        faces = avatar.animate(adapted[picks], progress=False, consecutive=False)  # at the face's own size
        cx, cy, side = avatar.source_box
        half = int(side * 0.45)
        tiles = []
        for face, marks in zip(faces, adapted[picks]):
            frame = paste_frame(avatar, face, marks)
            pad = np.pad(frame, ((half, half), (half, half), (0, 0)), mode="edge")
            tiles.append(pad[int(cy):int(cy) + 2 * half, int(cx):int(cx) + 2 * half])
        rows.append(np.concatenate(tiles, 1))
    mouth.guide_distrust = mouth.draw_interior = True
    out = np.concatenate(rows, 0)
    return out if out.shape[1] <= 2400 else cv2.resize(out, (2400, round(out.shape[0] * 2400 / out.shape[1])),
                                                        interpolation=cv2.INTER_AREA)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--steps", type=int, default=None, help="fine-tuning steps (default: the CLI's)")
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--mouth-weights", default="", help="mouth generator file (default: the bundled one)")
    args = parser.parse_args()
    import torch
    from PIL import Image

    from talkinghead.infer.avatar import Avatar
    from talkinghead.infer.demo import bundled_source, bundled_track
    from talkinghead.infer.driving import DrivingTrack, smoothed
    from talkinghead.infer.reenact import adapt_landmarks, mouth_opening

    torch.set_num_threads(2)
    start = time.perf_counter()
    marks, fps = bundled_track()
    track = smoothed(DrivingTrack(marks, fps, 0, None)).landmarks
    widest = np.sort(np.argsort(-mouth_opening(marks))[:args.frames])
    args.out.mkdir(parents=True, exist_ok=True)
    for name, path in PORTRAITS.items():
        source = bundled_source() if path is None else path
        avatar = Avatar.from_images([source], finetune_steps=args.steps, progress=False)
        avatar.config.mouth.weights = args.mouth_weights
        adapted = adapt_landmarks(track, avatar.reference_landmarks)
        picture = strip(avatar, adapted, widest)
        file = args.out / f"mouth_{name}.jpg"
        Image.fromarray(picture).save(file, quality=85)
        print(f"{file}: {picture.shape[1]}×{picture.shape[0]}, face box {avatar.source_box[2]:.0f} px, "
              f"frames {widest.tolist()}, {file.stat().st_size // 1024} KB", flush=True)
    print(f"{time.perf_counter() - start:.0f} s, load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
