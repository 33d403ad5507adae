"""Benchmark `talkinghead prepare`: end-to-end frames/s with the landmark tracker, against
detecting the face in every frame, on the shared talking-head clips.

    python benchmarks/prepare.py                  # all shared clips, 2 workers
    python benchmarks/prepare.py --clips 8 --slow-frames 30

Measurements, all through the real pipeline (``prepare_dataset``: decode → landmarks →
crop → JPEG → clip file, ``--workers`` processes, worker start-up included):

1. end to end with the tracker on every frame of every clip (or ``--max-frames``);
2. the first ``--slow-frames`` frames of each clip with the tracker, and
3. the same frames detecting the face in every frame (same downscaled HOG detector):
   2 vs 3 is the tracker's speed-up with everything else equal;
4. for scale, the cost of the naive approach many scripts take: dlib's HOG on the
   full-resolution frame (upsampled once when under 640 px, face_recognition's default).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CLIPS = REPO.parent / "shared" / "data" / "faces" / "clips"


def _run(clips, workers: int, size: int, max_frames: int | None, track: bool, label: str):
    from talkinghead.data.prepare import PrepareOptions, prepare_dataset

    with tempfile.TemporaryDirectory(prefix="th_bench_") as tmp:
        options = PrepareOptions(size=size, max_frames=max_frames, track=track)
        summary = prepare_dataset([str(c.path) for c in clips], tmp, options, workers=workers,
                                  overwrite=True, progress=False)
    fps = summary.frames_processed / summary.wall
    stages = summary.stage_seconds()
    busy = sum(v for k, v in stages.items() if k != "total")
    n = max(summary.frames_processed, 1)
    split = ", ".join(f"{k} {1000 * v / n:.2f} ms ({100 * v / busy:.0f}%)"
                      for k, v in sorted(stages.items(), key=lambda kv: -kv[1]) if k != "total")
    valid = sum(r.valid for r in summary.done)
    print(f"{label}: {summary.frames_processed} frames in {summary.wall:.1f} s = {fps:.1f} frames/s "
          f"({summary.workers} workers, face in {valid} frames, {len(summary.skipped)} clips skipped)")
    print(f"    worker time per frame: {split}")
    return fps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=DEFAULT_CLIPS, help="folder of clips")
    parser.add_argument("--clips", type=int, default=None, help="use only the first N clips (sorted)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--max-frames", type=int, default=None, help="frames per clip, end to end")
    parser.add_argument("--slow-frames", type=int, default=60, help="frames per clip, tracker vs every frame")
    parser.add_argument("--naive-frames", type=int, default=2, help="frames per clip, full-resolution baseline")
    args = parser.parse_args()

    import cv2

    cv2.setNumThreads(1)
    from talkinghead.data.landmarks import get_detector, to_gray
    from talkinghead.data.prepare import discover_sources
    from talkinghead.data.video import iter_frames

    if not args.source.exists():
        print(f"error: {args.source}: not found (the shared face clips)", file=sys.stderr)
        return 2
    clips, _ = discover_sources([args.source])
    clips = clips[: args.clips] if args.clips else clips
    print(f"{len(clips)} clips from {args.source}; {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f} at start (the cores are shared: figures vary with it)\n")

    e2e = _run(clips, args.workers, args.size, args.max_frames, True, "[1] end to end, tracker")
    tracked = _run(clips, args.workers, args.size, args.slow_frames, True,
                   f"[2] first {args.slow_frames} frames/clip, tracker")
    every = _run(clips, args.workers, args.size, args.slow_frames, False,
                 f"[3] first {args.slow_frames} frames/clip, detect every frame")

    detector = get_detector("dlib")
    import dlib

    hog = dlib.get_frontal_face_detector()
    costs = []
    for c in clips:
        try:
            frames = list(iter_frames(c.path, args.naive_frames))
        except Exception:
            continue
        for frame in frames:
            gray = to_gray(frame)
            start = time.perf_counter()
            rects = hog(gray, 1 if max(gray.shape) < 640 else 0)
            if len(rects):
                r = rects[0]
                detector.landmarks_in_box(gray, np.array([r.left(), r.top(), r.right(), r.bottom()]))
            costs.append(time.perf_counter() - start)
    naive_ms = 1000 * float(np.mean(costs))
    # naive per-frame rate: its detection cost replaces ours, the rest of the pipeline as in [3]
    naive_fps = args.workers / (naive_ms / 1000 + args.workers / every) if every > 0 else 0.0
    print(f"[4] naive full-resolution HOG + landmarks: {naive_ms:.1f} ms/frame on {len(costs)} frames "
          f"(~{naive_fps:.1f} frames/s with {args.workers} workers, estimated)\n")

    print(f"summary: end to end {e2e:.1f} frames/s with {args.workers} workers; tracker vs detect-every-frame "
          f"on the same frames: {tracked:.1f} vs {every:.1f} frames/s = {tracked / every:.1f}x; "
          f"vs naive full-resolution detection: {e2e / naive_fps:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
