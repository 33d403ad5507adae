"""Inference speed: animate frames/s at 128 (small) and 256 (paper), and fine-tuning time.

    python benchmarks/infer.py                        # CPU, 2 threads
    python benchmarks/infer.py --device cuda          # adds batch 1 vs batched, fp32 vs fp16
    python benchmarks/infer.py --presets small --set train.finetune_steps=120 \
        train.finetune_adversarial=false train.finetune_jaw_drop=1   # the bundled model's FT
    python benchmarks/infer.py --output-sizes 256 512 --presets --no-finetune   # output-size rows only

Output-size rows (``--output-sizes``): the bundled model rendering at 256/512 px above its
128-px network (:mod:`talkinghead.infer.detail`: the shots warped at output size), K = 1 and
8 shots at 512 px, with each frame pasted back into a photo 1.5× the output size
(``animate --paste-back``), so the output-resolution warp and the paste-back are included.
Each is timed with the mouth path on (the default: the guide's distrust inside an opening mouth
and the drawn interior, :mod:`talkinghead.infer.mouth_interior`) and off, in turn; the
procedural track opens its mouth wider than the first shot in most frames, so K = 1 draws an
interior in most frames.
The machine's load average is printed with every row (a shared machine's figures depend on it),
and the process's CPU time per frame (all threads), which depends less on it.

Uses randomly initialised networks of each preset (speed does not depend on the weights) and
the real code paths: ``Avatar.animate`` (sketch drawing + G) and ``Avatar.from_crops`` with the
preset's default number of fine-tuning steps on 8 shots. The goals (issue 4): ≥ 25 frames/s at
256×256 on one GPU at batch 1, and fine-tuning 8 shots in under a minute on one GPU.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from talkinghead.config import get_preset
from talkinghead.data.synthetic import procedural_track, render_synthetic_face
from talkinghead.infer.avatar import Avatar
from talkinghead.models import build_models
from talkinghead.checkpoint import save_checkpoint


def random_checkpoint(cfg, folder: Path) -> Path:
    E, G, D = build_models(cfg.model, num_videos=1)
    return save_checkpoint(folder / f"{cfg.preset}.safetensors", cfg, {"E": E, "G": G, "D": D}, 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--presets", nargs="*", default=["small", "paper"])
    ap.add_argument("--output-sizes", nargs="*", type=int, default=[],
                    help="also time the bundled model at these output sizes, paste-back included")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--no-finetune", action="store_true")
    ap.add_argument("--set", nargs="+", default=[], metavar="SECTION.FIELD=VALUE",
                    help="config overrides, e.g. the fine-tuning settings of a model")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    frames = args.frames or (200 if cuda else 24)
    name = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"# inference benchmark on {name} (torch {torch.__version__})\n")
    print("| preset | size | batch | precision | frames/s | ms/frame |")
    print("|---|---:|---:|---|---:|---:|")
    tmp = Path(tempfile.mkdtemp())
    finetune_rows = []
    for preset in args.presets:
        cfg = get_preset(preset).override(args.set)
        ckpt = random_checkpoint(cfg, tmp)
        size = cfg.model.image_size
        track = procedural_track(size, frames=max(frames, 8))
        crops = np.stack([render_synthetic_face(l, size) for l in track[:8]])
        avatar = Avatar.from_crops(crops, track[:8], ckpt, finetune_steps=0, device=args.device, progress=False)
        settings = [(1, False), (16, False)] + ([(1, True), (16, True)] if cuda else [])
        for batch, half in settings:
            avatar.animate(track[: batch * 2], batch_size=batch, progress=False, half=half)  # warm-up
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            avatar.animate(track[:frames], batch_size=batch, progress=False, half=half)
            if cuda:
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            print(f"| {preset} | {size} | {batch} | {'fp16' if half else 'fp32'} | {frames / dt:.1f} | "
                  f"{1000 * dt / frames:.1f} |", flush=True)
        if not args.no_finetune:
            t0 = time.perf_counter()
            ft = Avatar.from_crops(crops, track[:8], ckpt, finetune_steps=None, device=args.device, progress=False)
            if cuda:
                torch.cuda.synchronize()
            finetune_rows.append((preset, size, ft.finetune_steps, time.perf_counter() - t0))
    if args.output_sizes:
        output_size_rows(args.output_sizes, args.device, args.frames or (200 if cuda else 48))
    if finetune_rows:
        if args.set:
            print(f"\nfine-tuning with {' '.join(args.set)}")
        print("\n| preset | size | shots | FT steps | fine-tuning time (s) |")
        print("|---|---:|---:|---:|---:|")
        for preset, size, steps, seconds in finetune_rows:
            print(f"| {preset} | {size} | 8 | {steps} | {seconds:.1f} |")


def load_average() -> str:
    import os

    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def output_size_rows(sizes: list[int], device: str, frames: int) -> None:
    """animate at each output size with the bundled model, paste-back included (see the docstring)."""
    from talkinghead.infer.bundled import BUNDLED_CHECKPOINT
    from talkinghead.infer.driving import paste_frame

    cuda = torch.device(device).type == "cuda"
    print(f"\n# output sizes, bundled model, {frames} frames, paste-back into a photo 1.5x the output size")
    print("| output px | shots | mouth path | frames/s | ms/frame | of which render | CPU ms/frame (all threads) "
          "| frames with an interior | load average (1, 5, 15 min) before → after |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---|")
    for size in sizes:
        track = procedural_track(128, frames=max(frames, 8))
        for shots in (1, 8):
            crops = np.stack([render_synthetic_face(l, 128) for l in track[:shots]])
            crops_hi = np.stack([render_synthetic_face(l * size / 128, size) for l in track[:shots]])
            avatar = Avatar.from_crops(crops, track[:shots], BUNDLED_CHECKPOINT, finetune_steps=0, device=device,
                                       progress=False, crops_hi=crops_hi)
            photo = np.full((size * 3 // 2, size * 3 // 2, 3), 128, np.uint8)
            avatar.source_image, avatar.source_box = photo, np.array([size * 0.75, size * 0.75, size], np.float32)
            avatar.animate(track[:16], progress=False, size=size)  # warm-up
            for mouth in (False, True, False, True):
                avatar.config.mouth.guide_distrust = avatar.config.mouth.draw_interior = mouth
                drawn = int((avatar.mouth_levels(track[:frames]) > 0).sum())
                if cuda:
                    torch.cuda.synchronize()
                load = load_average()
                cpu0 = time.process_time()
                t0 = time.perf_counter()
                rendered = avatar.animate(track[:frames], progress=False, size=size)
                if cuda:
                    torch.cuda.synchronize()
                t1 = time.perf_counter()
                for t in range(frames):
                    paste_frame(avatar, rendered[t], track[t])
                dt = time.perf_counter() - t0
                cpu = time.process_time() - cpu0
                print(f"| {size} | {shots} | {'on' if mouth else 'off'} | {frames / dt:.1f} | {1000 * dt / frames:.1f} | "
                      f"{1000 * (t1 - t0) / frames:.1f} | {1000 * cpu / frames:.1f} | {drawn}/{frames} | "
                      f"{load} → {load_average()} |", flush=True)


if __name__ == "__main__":
    main()
