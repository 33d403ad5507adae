"""Is the jitter figure measuring motion or the landmark detector's noise?

    python experiments/jitter_instrument.py --data data/faces128 --checkpoint MODEL --shots 32 --frames 24

For every dev video, builds the evaluation protocol's FT avatar from its K shots and renders its
jitter run (driving landmarks One-Euro smoothed, as ``evaluate`` does), then scores the same
frames with several instruments: dlib on the frames as they are (``evaluate`` up to protocol
4), on the frames blurred (Gaussian σ = 1 px: a steadier *reading* with no change in motion
means the instrument rewards blur), and on copies enlarged to 256 and 512 px
(``eval.metrics.LANDMARK_SIZE``, protocol 5). The real frames of the run, scored the same ways
against their landmarks from the full-resolution video, calibrate each instrument: at full
resolution they are 1 by definition, so a reading well above 1 is the instrument's own noise.
"""

from __future__ import annotations

import cv2
import numpy as np
from harness import clips, model, parser, print_table, protocol_samples

from talkinghead.eval.metrics import detect_landmarks_on_images, jitter_ratio
from talkinghead.eval.protocol import Scorer, jitter_run
from talkinghead.infer.avatar import Avatar
from talkinghead.losses import build_content_loss

INSTRUMENTS = {"as is": (0, 0.0), "blurred σ=1": (0, 1.0), "enlarged 256": (256, 0.0), "enlarged 512": (512, 0.0)}


def read_jitter(frames: np.ndarray, landmarks: np.ndarray, detector, enlarge_to: int, blur: float) -> float:
    """Jitter ratio of (T, S, S, 3) ``frames`` against (T, 68, 2) ``landmarks`` with one instrument."""
    if blur:
        frames = np.stack([cv2.GaussianBlur(f, (0, 0), blur) for f in frames])
    found, _ = detect_landmarks_on_images(frames, landmarks, detector, enlarge_to=enlarge_to)
    return float(jitter_ratio(found, landmarks))


def main() -> None:
    ap = parser(__doc__, shots=(32,), checkpoint=True)
    ap.add_argument("--frames", type=int, default=48, help="consecutive frames per run")
    args = ap.parse_args()

    (k,) = args.shots
    checkpoint = model(args)
    size = checkpoint.config.model.image_size
    content = build_content_loss(checkpoint.config.loss, "cpu")
    detector = Scorer().detector
    readings = {"rendered": {n: [] for n in INSTRUMENTS}, "real": {n: [] for n in INSTRUMENTS}}
    for video, shots, _targets in protocol_samples(clips(args), k, args.targets, size):
        if len(video.frames) - len(video.frames) // 2 < args.frames:
            continue
        run, drive = jitter_run(video, size, args.frames)
        avatar = Avatar.from_crops(shots.crops, shots.landmarks, checkpoint, progress=False, content_loss=content)
        frames = avatar.animate(drive, progress=False)
        for name, (enlarge_to, blur) in INSTRUMENTS.items():
            readings["rendered"][name].append(read_jitter(frames, run.landmarks, detector, enlarge_to, blur))
            readings["real"][name].append(read_jitter(run.crops, run.landmarks, detector, enlarge_to, blur))
        print(f"{video.key:36s} " + "  ".join(f"{n} {readings['rendered'][n][-1]:.3f}" for n in INSTRUMENTS), flush=True)
    print_table(("instrument", "rendered (FT)", "real frames"),
                [(n, float(np.mean(readings["rendered"][n])), float(np.mean(readings["real"][n]))) for n in INSTRUMENTS],
                f"K = {k}, {args.frames} frames, {len(readings['real']['as is'])} videos, "
                f"checkpoint {checkpoint.path.name}: jitter ratio by instrument")


if __name__ == "__main__":
    main()
