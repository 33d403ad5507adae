"""Does the rendered mouth follow the driver's? Mouth-opening correlation (issue 27, item 4).

    python benchmarks/mouth_follow.py                   # dev clips + cross-person pairs, CLI defaults
    python benchmarks/mouth_follow.py --steps 0 --clips 4 --no-cross
    python benchmarks/mouth_follow.py --smoothing-only      # the driving track's smoothing alone

For each dev-split clip of the shared faces data (its first ``MAX_FRAMES`` frames, tracked at
the clip's resolution), an avatar is built from 8 frames of the first half evenly spaced (CLI
default fine-tuning unless ``--steps``) and driven by the landmarks of the second half (whose
first frame is wherever the speaker happens to be), One-Euro smoothed as ``animate`` does, in
three ways:

* ``old default``: relative mode, reference = the first frame, offsets as they were;
* ``default``: relative mode as the CLI now drives it (neutral reference, mouths closed first);
* ``absolute``.

dlib's landmarks are found on each rendered frame (:func:`detect_landmarks_on_images`) and
the inner-lip gap over the inter-ocular distance is correlated with the driver's own (its
tracked landmarks, unsmoothed) over the clip. Cross-person pairs: portraits of the shared data
driven by dev clips (the driver's gap against the rendered one).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from mouth_clips import FACES, clip_frames, clip_track, mouth_opening, split_clips  # noqa: E402

SHOTS = 8
PORTRAITS = ("images/einstein.jpg", "images/mona_lisa.jpg", "images/taylor.png")
CROSS_DRIVERS = ("hdtf_radio34", "aoc_b", "vox_aldridge_a")
MODES = {"old default": dict(mode="relative", reference="first", neutral_mouth=False),
         "default": dict(mode="relative"),
         "absolute": dict(mode="absolute")}


def even_frames(clip, count: int, end: int | None = None) -> list[np.ndarray]:
    """``count`` frames evenly spaced over the clip's first ``end`` frames (all by default)."""
    frames = list(clip_frames(clip, end) if end else clip_frames(clip))
    picks = np.linspace(0, len(frames) - 1, count).round().astype(int)
    return [frames[i] for i in picks]


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or a[ok].std() == 0 or b[ok].std() == 0:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def follow(avatar, driver: np.ndarray, fps: float, modes=tuple(MODES)) -> dict[str, float]:
    """Mouth-opening correlation of the rendered frames with ``driver`` (T, 68, 2), per mode."""
    from talkinghead.eval.metrics import detect_landmarks_on_images
    from talkinghead.infer.driving import DrivingTrack, smoothed
    from talkinghead.infer.reenact import adapt_landmarks

    smooth = smoothed(DrivingTrack(driver, fps, 0, None)).landmarks
    out = {}
    for name in modes:
        adapted = adapt_landmarks(smooth, avatar.landmarks, **MODES[name])
        frames = avatar.animate(adapted, progress=False)  # at the avatar's output size, as animate renders
        scale = frames.shape[1] / avatar.size
        found, _ = detect_landmarks_on_images(frames, (adapted + 0.5) * scale - 0.5)
        out[name] = correlation(mouth_opening(found), mouth_opening(driver))
    return out


def table(rows: list[tuple[str, dict]], title: str) -> None:
    names = [n for n in MODES if n in rows[0][1]]
    print(f"\n| {title} | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for label, result in rows:
        print(f"| {label} | " + " | ".join(f"{result[n]:.2f}" for n in names) + " |")
    values = np.array([[r[n] for n in names] for _, r in rows])
    print("| **mean** | " + " | ".join(f"**{v:.2f}**" for v in np.nanmean(values, 0)) + " |")
    print("| min | " + " | ".join(f"{v:.2f}" for v in np.nanmin(values, 0)) + " |")


def smoothing_only(frames: int) -> None:
    """Per dev clip, the correlation of the smoothed driver's mouth opening with the raw one: the
    most the rendered mouth can follow, whatever the renderer does."""
    from talkinghead.infer.smoothing import MOUTH_MIN_CUTOFF, smooth_landmarks

    cutoffs = {"lips at 1.5 Hz (as the face)": 1.5, f"lips at {MOUTH_MIN_CUTOFF:g} Hz (shipped)": MOUTH_MIN_CUTOFF}
    rows = []
    for clip in split_clips("dev"):
        track, _valid = clip_track(clip)
        driver = track[len(track) // 2:len(track) // 2 + frames]
        rows.append((clip.name, {name: correlation(mouth_opening(smooth_landmarks(driver, clip.fps, mouth_min_cutoff=c)),
                                                   mouth_opening(driver)) for name, c in cutoffs.items()}))
    names = list(cutoffs)
    print("| dev clip | " + " | ".join(names) + " |\n|---|" + "---:|" * len(names))
    for name, result in rows:
        print(f"| {name} | " + " | ".join(f"{result[n]:.2f}" for n in names) + " |")
    values = np.array([[r[n] for n in names] for _, r in rows])
    print("| **mean** | " + " | ".join(f"**{v:.2f}**" for v in values.mean(0)) + " |")
    print("| lowest | " + " | ".join(f"{v:.2f}" for v in values.min(0)) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=None, help="fine-tuning steps (default: the CLI's)")
    parser.add_argument("--clips", type=int, default=0, help="only the first N dev clips (0: all; -1: none)")
    parser.add_argument("--no-cross", action="store_true", help="skip the cross-person pairs")
    parser.add_argument("--frames", type=int, default=60, help="driving frames per clip (default 60)")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--portraits", nargs="+", default=list(PORTRAITS), help="cross-person sources")
    parser.add_argument("--drivers", nargs="+", default=list(CROSS_DRIVERS), help="cross-person driving clips")
    parser.add_argument("--smoothing-only", action="store_true",
                        help="no rendering: how well the smoothed driver's mouth opening follows the raw one, "
                             "with the lips smoothed like the face (1.5 Hz) and as shipped")
    args = parser.parse_args()
    if args.smoothing_only:
        smoothing_only(args.frames)
        return
    import torch

    from talkinghead.infer.avatar import Avatar

    torch.set_num_threads(2)
    start = time.perf_counter()
    clips = split_clips("dev")
    clips = clips[:args.clips] if args.clips else clips
    clips = [] if args.clips < 0 else clips
    rows = []
    for clip in clips:
        driver, _valid = clip_track(clip)
        half = len(driver) // 2
        avatar = Avatar.from_images(even_frames(clip, SHOTS, half), finetune_steps=args.steps, progress=False)
        rows.append((clip.name, follow(avatar, driver[half:half + args.frames], clip.fps, args.modes)))
        print(clip.name, {k: round(v, 3) for k, v in rows[-1][1].items()}, flush=True)
    if rows:
        table(rows, f"dev clip ({SHOTS} shots, self-driven)")
    if not args.no_cross:
        drivers = {c.name: c for c in split_clips("dev") if c.name in args.drivers}
        cross = []
        for portrait in args.portraits:
            avatar = Avatar.from_images([FACES / portrait], finetune_steps=args.steps, progress=False)
            for name, clip in drivers.items():
                cross.append((f"{Path(portrait).stem} ← {name}", follow(avatar, clip_track(clip)[0][:args.frames], clip.fps,
                                                                       ("old default", "default"))))
                print(cross[-1][0], {k: round(v, 3) for k, v in cross[-1][1].items()}, flush=True)
        table(cross, "portrait ← dev clip (1 shot)")
    print(f"\n{time.perf_counter() - start:.0f} s, load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
