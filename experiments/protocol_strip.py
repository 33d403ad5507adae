"""One dev video as ``evaluate`` renders it, one labelled row each: the real frames, the
classical warp, and each model fine-tuned (FT); optionally a row of the avatar's shots.

    python experiments/protocol_strip.py --data data/faces128 -o docs/head_turn.jpg
    python experiments/protocol_strip.py --data data/faces128 --video pyfeat_wlanger/pyfeat_wlanger \\
        --shots 32 --frames run --shot-row --compare paper769.safetensors "paper G, FT" \\
        -o docs/occluded_shots.jpg

``--frames targets`` (default) shows the 8 targets and prints each row's SSIM and face found;
``--frames run`` shows every ``--every``-th frame of the jitter run (consecutive frames,
driving landmarks One-Euro smoothed) and prints each row's jitter figure, as ``evaluate``
scores them. Defaults: ``vox_aldridge_a`` (its shots are mostly profiles, its targets
three-quarter), K = 8, the bundled model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from talkinghead.checkpoint import load_checkpoint
from talkinghead.data.episodes import load_videos
from talkinghead.eval.protocol import EvalSettings, Scorer, render_methods, score_rendered
from talkinghead.fileio import atomic_path
from talkinghead.infer.bundled import resolve_checkpoint


def labelled_row(frames: np.ndarray, label: str) -> np.ndarray:
    """(T, S, S, 3) uint8 → (S, T·S, 3) with ``label`` written in its top-left corner."""
    row = Image.fromarray(np.concatenate(list(frames), axis=1))
    ImageDraw.Draw(row).text((4, 4), label, fill=(255, 255, 0))
    return np.asarray(row)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="data set prepared by `talkinghead prepare`")
    ap.add_argument("--video", default="vox_aldridge/vox_aldridge_a", help="video key in the data set")
    ap.add_argument("--shots", type=int, default=8)
    ap.add_argument("--checkpoint", default=None, help="meta checkpoint (default: the bundled model)")
    ap.add_argument("--label", default="warp-guided G, FT", help="row label of --checkpoint")
    ap.add_argument("--compare", nargs=2, action="append", default=[], metavar=("CHECKPOINT", "LABEL"),
                    help="another meta checkpoint to fine-tune and show (repeatable)")
    ap.add_argument("--frames", choices=("targets", "run"), default="targets")
    ap.add_argument("--every", type=int, default=4, help="--frames run: show every N-th frame")
    ap.add_argument("--shot-row", action="store_true", help="add a row of the avatar's shots (as many as fit)")
    ap.add_argument("-o", "--output", type=Path, required=True, help="picture to write (JPEG or PNG)")
    args = ap.parse_args()

    videos = [v for v in load_videos(args.data, [args.video.split("/")[0]], min_frames=1) if v.key == args.video]
    if not videos:
        raise SystemExit(f"{args.data}: no video {args.video!r}")
    video = videos[0]
    models = [(resolve_checkpoint(args.checkpoint), args.label)] + [(Path(p), label) for p, label in args.compare]
    rows, scorer = [], Scorer()
    for i, (path, label) in enumerate(models):
        checkpoint = load_checkpoint(path)
        size = checkpoint.config.model.image_size
        rendered = render_methods(video, checkpoint, EvalSettings(), size, args.shots)
        results, _ = score_rendered(video, args.shots, rendered, scorer)
        if args.frames == "targets":
            real, outputs = rendered.target.crops, rendered.outputs
        else:
            real, outputs = rendered.run.crops[::args.every], {m: f[::args.every] for m, f in rendered.runs.items()}
        if i == 0:
            if args.shot_row:
                shots = rendered.source.crops
                shown = np.linspace(0, len(shots) - 1, min(len(real), len(shots))).round().astype(int)
                rows.append(labelled_row(shots[shown], f"{len(shown)} of the {args.shots} shots"))
            rows.append(labelled_row(real, "real"))
            rows.append(labelled_row(outputs["warp"], "warp"))
            report("warp", "warp", results, args.frames)
        rows.append(labelled_row(outputs["FT"], label))
        report(label, "FT", results, args.frames)
    with atomic_path(args.output) as tmp:
        Image.fromarray(np.concatenate(rows, axis=0)).save(tmp, format="JPEG" if args.output.suffix.lower()
                                                          in (".jpg", ".jpeg") else "PNG", quality=90)
    print(f"wrote {args.output} ({len(rows)} rows)")


def report(label: str, method: str, results: dict, frames: str) -> None:
    """Print ``method``'s score in ``results`` under ``label``: SSIM and face found, or jitter."""
    m = results["metrics"][method]
    if frames == "targets":
        print(f"{label:24s} SSIM {np.mean(m['ssim']):.4f}  face found {int(sum(m['face_found']))}/{len(m['ssim'])}")
    else:
        print(f"{label:24s} jitter {m['jitter'][0]:.3f}")


if __name__ == "__main__":
    main()
