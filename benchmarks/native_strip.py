"""A picture of the native-resolution protocol (``evaluate --native``) on one dev clip: the real
frames, the model pasted back, and the classical warp pasted back, each cut to the real frame's
face box at the clip's own resolution (no resampling), a few frames side by side.

    python benchmarks/native_strip.py /work/shared/data/faces/clips/vr5.mp4 -o docs/native_vr5.jpg
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clip", type=Path)
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--frames", type=int, default=24, help="frames after the first (the shot) to drive")
    ap.add_argument("--show", type=int, default=4, help="frames shown")
    args = ap.parse_args()
    from talkinghead.checkpoint import load_checkpoint
    from talkinghead.data.landmarks import get_detector
    from talkinghead.data.sketch import tensor_to_image
    from talkinghead.data.tracking import track_landmarks
    from talkinghead.data.video import iter_frames
    from talkinghead.eval.native import face_box, score_frame
    from talkinghead.infer.avatar import Avatar
    from talkinghead.infer.bundled import BUNDLED_CHECKPOINT
    from talkinghead.infer.driving import DrivingTrack, drive, hold_lost_frames, paste_frame

    frames = list(iter_frames(args.clip, max_frames=args.frames + 1))
    detector = get_detector("dlib")
    landmarks, valid, _ = track_landmarks(iter(frames), detector)
    filled, lost = hold_lost_frames(np.where(valid[:, None, None], landmarks, np.nan))
    avatar = Avatar.from_images([frames[0]], load_checkpoint(BUNDLED_CHECKPOINT), progress=False, detector=detector)
    adapted, rendered = drive(avatar, DrivingTrack(filled[1:], 25.0, lost, None), mode="absolute", progress=False)
    with torch.inference_mode():
        warped = tensor_to_image(avatar.detail_renderer().classical_warp(torch.from_numpy(adapted),
                                                                          rendered.shape[1]))
    picks = np.linspace(1, len(frames) - 1, args.show).round().astype(int)
    columns = []
    for t in picks:
        real, marks = frames[t], landmarks[t]
        x0, y0, x1, y1 = face_box(marks, real.shape[1], real.shape[0])
        model = paste_frame(avatar, rendered[t - 1], adapted[t - 1])
        warp = paste_frame(avatar, warped[t - 1], adapted[t - 1])
        cells = [real[y0:y1, x0:x1], model[y0:y1, x0:x1], warp[y0:y1, x0:x1]]
        side = min(c.shape[0] for c in cells)
        columns.append(np.concatenate([c[:side, :side] for c in cells], axis=0))
        psnr_m, ssim_m, sharp_m = score_frame(model, real, marks)
        psnr_w, ssim_w, sharp_w = score_frame(warp, real, marks)
        print(f"frame {t}: model {psnr_m:.2f} dB SSIM {ssim_m:.3f} sharpness {sharp_m:.2f}; "
              f"warp {psnr_w:.2f} dB SSIM {ssim_w:.3f} sharpness {sharp_w:.2f}")
    height = min(c.shape[0] for c in columns)
    strip = np.concatenate([c[:height] for c in columns], axis=1)
    cv2.imwrite(str(args.output), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    print(f"{args.output}: rows real | model (--paste-back) | classical warp; {strip.shape[1]}x{strip.shape[0]} px, "
          f"output size {rendered.shape[1]} px")


if __name__ == "__main__":
    main()
