"""The model card's head-turn strip: one dev video as ``evaluate`` renders it — real targets,
classical warp, the model fine-tuned — one labelled row each.

    python benchmarks/head_turn_strip.py --data data/faces128 -o docs/head_turn.jpg

Defaults: ``vox_aldridge_a`` (its shots are mostly profiles, its targets three-quarter), K = 8,
the bundled model. Also prints the three rows' SSIM and face found, as ``evaluate`` scores them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from talkinghead.checkpoint import load_checkpoint
from talkinghead.data.episodes import load_videos
from talkinghead.eval.protocol import EvalSettings, Scorer, evaluate_video
from talkinghead.fileio import atomic_path
from talkinghead.infer.bundled import resolve_checkpoint

ROWS = (("real", None), ("warp", "warp"), ("warp-guided G, FT", "FT"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="data set prepared by `talkinghead prepare`")
    ap.add_argument("--video", default="vox_aldridge/vox_aldridge_a", help="video key in the data set")
    ap.add_argument("--shots", type=int, default=8)
    ap.add_argument("--checkpoint", default=None, help="meta checkpoint (default: the bundled model)")
    ap.add_argument("-o", "--output", type=Path, required=True, help="picture to write (JPEG or PNG)")
    args = ap.parse_args()

    videos = [v for v in load_videos(args.data, [args.video.split("/")[0]], min_frames=1) if v.key == args.video]
    if not videos:
        raise SystemExit(f"{args.data}: no video {args.video!r}")
    checkpoint = load_checkpoint(resolve_checkpoint(args.checkpoint))
    collected = {}
    results, _ = evaluate_video(videos[0], checkpoint, EvalSettings(), Scorer(), checkpoint.config.model.image_size,
                                args.shots, collect=lambda outputs, real: collected.update(outputs, real=real))
    rows = []
    for label, method in ROWS:
        frames = collected["real"] if method is None else collected[method]
        row = Image.fromarray(np.concatenate(list(frames), axis=1))
        ImageDraw.Draw(row).text((4, 4), label, fill=(255, 255, 0))
        rows.append(np.asarray(row))
        if method is not None:
            m = results["metrics"][method]
            print(f"{method:4s} SSIM {np.mean(m['ssim']):.4f}  face found {int(sum(m['face_found']))}/{len(m['ssim'])}")
    with atomic_path(args.output) as tmp:
        Image.fromarray(np.concatenate(rows, axis=0)).save(tmp, format="JPEG" if args.output.suffix.lower()
                                                          in (".jpg", ".jpeg") else "PNG", quality=90)
    print(f"wrote {args.output} (rows: {', '.join(label for label, _ in ROWS)})")


if __name__ == "__main__":
    main()
