"""Benchmark the landmark tracker against fresh detections: does the track stay on the face?

    python benchmarks/tracking.py                         # every shared clip, every 10th frame
    python benchmarks/tracking.py clips/ other.mp4 --every 5 --workers 2 --json out.json

Each clip is tracked with :func:`talkinghead.data.landmarks.track_landmarks` as ``animate`` does
(dlib HOG, its CNN as the fallback). On every ``--every``-th frame a fresh detection over the
whole frame (HOG; HOG on a frame twice as large, then the CNN, where it finds no face) and the
shape predictor in the detector's box give the reference landmarks; the box is HOG's again in a
window around the face where it can (:func:`talkinghead.data.tracking.fresh_landmarks`). The
error of a frame is the mean point distance between the track and the reference, in the
reference's inter-ocular (outer eye corner) distances. Per clip and overall: frames checked,
median and max error, frames off by more than 0.3, checked frames the track itself marks lost
(reported apart, not counted as off), frames where the reference finds no face, and the
tracker's frames/s (its own time in one process, decoding excluded).

The benchmark uses only ``track_landmarks`` of the code under test, so the same script measures
an older tracker: put this file and ``src/talkinghead/data/tracking.py`` into an older tree.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CLIPS = REPO.parent / "shared" / "data" / "faces" / "clips"


def _frames_timed(path: Path, max_frames: int | None, every: int, seconds: dict, samples: dict):
    """The clip's frames, decoding time added to ``seconds['decode']``; every ``every``-th
    frame is also kept in ``samples`` for the check."""
    from talkinghead.data.video import iter_frames

    frames = iter_frames(path, max_frames)
    t = 0
    while True:
        start = time.perf_counter()
        frame = next(frames, None)
        seconds["decode"] += time.perf_counter() - start
        if frame is None:
            return
        if t % every == 0:
            samples[t] = frame
        t += 1
        yield frame


def bench_clip(path: str, every: int, max_frames: int | None) -> dict:
    """Track one clip and check it; a JSON-ready row."""
    import cv2

    from talkinghead.data.landmarks import get_detector, track_landmarks
    from talkinghead.data.tracking import check_track, stronger_detectors

    cv2.setNumThreads(1)
    detector, fallback = get_detector("dlib"), get_detector("dlib-cnn")
    seconds = {"decode": 0.0}
    samples: dict[int, np.ndarray] = {}
    start = time.perf_counter()
    landmarks, valid, stats = track_landmarks(_frames_timed(Path(path), max_frames, every, seconds, samples),
                                              detector, fallback=fallback)
    track_s = time.perf_counter() - start - seconds["decode"]
    landmarks = np.where(np.asarray(valid)[:, None, None], landmarks, np.nan)
    check = check_track(sorted(samples.items()), landmarks, detector, stronger_detectors(detector))
    row = {"clip": Path(path).name, "frames": int(len(valid)), "track_s": track_s, **check.summary(),
           "errors": [None if not np.isfinite(e) else round(float(e), 4) for e in check.errors],
           "sampled_frames": check.frames, "lost_frames": [t for t, lost in zip(check.frames, check.lost) if lost]}
    row["status"] = {k: stats[k] for k in ("tracked", "verified", "redetected", "held", "lost") if k in stats}
    return row


def _fmt(value, digits=3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="*", default=[str(DEFAULT_CLIPS)],
                        help="clips, folders or manifests (default: the shared clips)")
    parser.add_argument("--every", type=int, default=10, help="check every N-th frame")
    parser.add_argument("--max-frames", type=int, default=None, help="frames per clip")
    parser.add_argument("--workers", type=int, default=1, help="clips tracked in parallel")
    parser.add_argument("--json", type=Path, default=None, help="write every row (and each frame's error) here")
    args = parser.parse_args()

    from talkinghead.data.prepare import discover_sources
    from talkinghead.data.tracking import OFF_FACE

    clips, _ = discover_sources(args.sources)
    if not clips:
        print(f"error: {', '.join(args.sources)}: no clips found", file=sys.stderr)
        return 2
    print(f"# tracking benchmark: {len(clips)} clips, every {args.every}th frame, {args.workers} worker(s); "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start\n")
    paths = [str(c.path) for c in clips]
    started = time.perf_counter()
    if args.workers > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as pool:
            rows = list(pool.map(bench_clip, paths, [args.every] * len(paths), [args.max_frames] * len(paths)))
    else:
        rows = [bench_clip(p, args.every, args.max_frames) for p in paths]
    wall = time.perf_counter() - started

    print(f"| clip | frames | checked | median | max | off > {OFF_FACE} | lost (track) | no face (detection) "
          f"| re-detected / held / lost frames | tracker frames/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        status = " / ".join(str(r["status"].get(k, "–")) for k in ("redetected", "held", "lost"))
        print(f"| {r['clip']} | {r['frames']} | {r['checked']} | {_fmt(r['median'])} | {_fmt(r['max'])} | {r['off']} "
              f"| {r['lost']} | {r['no_face']} | {status} | {r['frames'] / max(r['track_s'], 1e-9):.0f} |")
    errors = np.array([e for r in rows for e in r["errors"] if e is not None], np.float64)
    frames = sum(r["frames"] for r in rows)
    track_s = sum(r["track_s"] for r in rows)
    off = int((errors > OFF_FACE).sum())
    lost = sum(r["lost"] for r in rows)
    print(f"\noverall: {len(rows)} clips, {frames} frames, {errors.size} checked; median {np.median(errors):.4f}, "
          f"max {errors.max():.3f} inter-ocular distances; off by > {OFF_FACE}: {off} "
          f"({100 * off / max(errors.size, 1):.2f} %) in {sum(r['off'] > 0 for r in rows)} clips; "
          f"marked lost by the track: {lost}; no face for the detection: {sum(r['no_face'] for r in rows)}")
    print(f"tracker: {frames / track_s:.0f} frames/s in one process (decoding excluded); wall {wall:.0f} s; "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    if args.json:
        args.json.write_text(json.dumps({"every": args.every, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
