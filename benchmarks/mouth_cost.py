"""What the mouth path costs per frame, its parts timed alone (CPU, 2 threads).

    python benchmarks/mouth_cost.py

* the guide's distrust (:func:`~talkinghead.data.mouth.guide_distrust`) for a batch of 16
  frames × 2 fused shots at the network's 128 px (it runs for every frame, open or not);
* the drawn interior (:func:`~talkinghead.infer.mouth_interior.draw_interior`) on one wide-open
  mouth at 128, 256 and 512 px output (it runs only on frames opening wider than every shot);
* the learned interior (:class:`~talkinghead.infer.mouth_interior.LearnedInterior`, the bundled
  mouth generator) on the same mouths, one frame at a time (``live``) and 8 at once
  (``animate``), with onnxruntime and with PyTorch.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch


def best_ms(fn, repeats: int = 20) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def main() -> None:
    from talkinghead.data.mouth import guide_distrust
    from talkinghead.data.synthetic import template_landmarks
    from talkinghead.infer.expression import open_mouth
    from talkinghead.checkpoint import load_mouth_checkpoint
    from talkinghead.data.synthetic import render_synthetic_face
    from talkinghead.infer.bundled import resolve_mouth_weights
    from talkinghead.infer.mouth_interior import LearnedInterior, MouthPalette, draw_interior
    from talkinghead.models.mouth import MouthGenerator

    torch.set_num_threads(2)
    closed = template_landmarks(128)[None].astype(np.float64)
    wide = open_mouth(closed, 1.0, 0.45)
    shots = torch.from_numpy(np.repeat(closed, 32, 0)).float()
    targets = torch.from_numpy(np.repeat(wide, 32, 0)).float()
    ms = best_ms(lambda: guide_distrust(shots, targets, 128))
    print(f"guide distrust, 16 frames × 2 shots at 128 px: {ms:.2f} ms per batch, {ms / 16:.2f} ms per frame")
    palette = MouthPalette(np.array([200.0, 110, 100]), np.array([235.0, 228, 215]),
                           np.array([96.0, 29, 26]), np.array([184.0, 68, 62]))
    net_config, weights, _ = load_mouth_checkpoint(resolve_mouth_weights(None))
    net = MouthGenerator(net_config)
    net.load_state_dict(weights)
    for size in (128, 256, 512):
        image = np.full((size, size, 3), 170, np.uint8)
        marks = (wide[0] + 0.5) * size / 128 - 0.5
        ms = best_ms(lambda: draw_interior(image, marks, 1.0, palette, blur=1.2 * size / 128))
        print(f"drawn interior, one wide-open mouth at {size} px: {ms:.2f} ms per frame")
        shot_marks = (closed[0] + 0.5) * size / 128 - 0.5
        learned = LearnedInterior(net, render_synthetic_face(shot_marks, size), shot_marks)
        runtimes = [("onnxruntime", learned.session), ("PyTorch", None)] if learned.session else [("PyTorch", None)]
        for name, session in runtimes:
            learned.session = session
            for batch in (1, 8):
                frames = np.repeat(image[None], batch, 0)
                ms = best_ms(lambda: learned.fill(frames.copy(), np.repeat(marks[None], batch, 0), np.ones(batch)), 10)
                print(f"learned interior ({name}), {batch} wide-open mouth(s) at {size} px: {ms / batch:.2f} ms per frame")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
