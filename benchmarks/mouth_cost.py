"""What the mouth path costs per frame, its parts timed alone (CPU, 2 threads).

    python benchmarks/mouth_cost.py

* the guide's distrust (:func:`~talkinghead.data.mouth.guide_distrust`) for a batch of 16
  frames × 2 fused shots at the network's 128 px (it runs for every frame, open or not);
* the drawn interior (:func:`~talkinghead.infer.mouth_interior.draw_interior`) on one wide-open
  mouth at 256 and 512 px output (it runs only on frames opening wider than every shot).
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
    from talkinghead.infer.mouth_interior import MouthPalette, draw_interior

    torch.set_num_threads(2)
    closed = template_landmarks(128)[None].astype(np.float64)
    wide = open_mouth(closed, 1.0, 0.45)
    shots = torch.from_numpy(np.repeat(closed, 32, 0)).float()
    targets = torch.from_numpy(np.repeat(wide, 32, 0)).float()
    ms = best_ms(lambda: guide_distrust(shots, targets, 128))
    print(f"guide distrust, 16 frames × 2 shots at 128 px: {ms:.2f} ms per batch, {ms / 16:.2f} ms per frame")
    palette = MouthPalette(np.array([200.0, 110, 100]), np.array([235.0, 228, 215]),
                           np.array([96.0, 29, 26]), np.array([184.0, 68, 62]))
    for size in (256, 512):
        image = np.full((size, size, 3), 170, np.uint8)
        marks = (wide[0] + 0.5) * size / 128 - 0.5
        ms = best_ms(lambda: draw_interior(image, marks, 1.0, palette, blur=1.2 * size / 128))
        print(f"drawn interior, one wide-open mouth at {size} px: {ms:.2f} ms per frame")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
