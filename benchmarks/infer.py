"""Inference speed: animate frames/s at 128 (small) and 256 (paper), and fine-tuning time.

    python benchmarks/infer.py                        # CPU, 2 threads
    python benchmarks/infer.py --device cuda          # adds batch 1 vs batched, fp32 vs fp16
    python benchmarks/infer.py --presets small --set train.finetune_steps=120 \
        train.finetune_adversarial=false train.finetune_jaw_drop=1   # the bundled model's FT

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
    ap.add_argument("--presets", nargs="+", default=["small", "paper"])
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--no-finetune", action="store_true")
    ap.add_argument("--set", nargs="+", default=[], metavar="SECTION.FIELD=VALUE",
                    help="config overrides, e.g. the fine-tuning settings of a model")
    args = ap.parse_args()
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
    if finetune_rows:
        if args.set:
            print(f"\nfine-tuning with {' '.join(args.set)}")
        print("\n| preset | size | shots | FT steps | fine-tuning time (s) |")
        print("|---|---:|---:|---:|---:|")
        for preset, size, steps, seconds in finetune_rows:
            print(f"| {preset} | {size} | 8 | {steps} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
