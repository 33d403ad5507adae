"""Live driving end to end: frames/s and latency (frame captured → frame shown), landmark
tracking included, the driver read from a video file at its native rate (as a camera delivers
frames), through the same threaded pipeline as `talkinghead live`.

    python benchmarks/live.py                          # 128 px (bundled model) and 256 px
    python benchmarks/live.py --frames 250 --clip /path/to/driver.mp4

Rows: the bundled 128 px model (PyTorch and onnxruntime renderers) at output sizes 128 and,
with the output-resolution detail layer (infer/detail.py), 256 (``256-torch``, ``256-onnx``) or
any ``SIZE-torch``/``SIZE-onnx``; the small architecture at 256 px and the paper's architecture
at 256 px (random weights: speed does not depend on them).
Goal (issue 14): >= 25 frames/s with <= 150 ms latency at 128 px on 2 CPU cores. The stage
times say what bounds each row: the slowest stage sets the frame rate.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

DEFAULT_CLIP = Path(__file__).resolve().parents[2] / "shared/data/faces/clips/eamm_disgusted.mp4"


def bundled_avatar():
    from skimage import data

    from talkinghead.infer.avatar import Avatar
    from talkinghead.infer.bundled import BUNDLED_CHECKPOINT

    return Avatar.from_images([data.astronaut()], BUNDLED_CHECKPOINT, finetune_steps=0, device="cpu", progress=False)


def random_avatar(preset: str, size: int, folder: Path):
    from talkinghead.config import get_preset
    from talkinghead.data.synthetic import procedural_track, render_synthetic_face
    from talkinghead.infer.avatar import Avatar
    from talkinghead.models import build_models
    from talkinghead.train.checkpoint import save_checkpoint

    cfg = get_preset(preset).override([f"model.image_size={size}"])
    E, G, D = build_models(cfg.model, num_videos=1)
    ckpt = save_checkpoint(folder / f"{preset}{size}.safetensors", cfg, {"E": E, "G": G, "D": D}, 0)
    track = procedural_track(size, frames=2)
    crops = np.stack([render_synthetic_face(l, size) for l in track])
    return Avatar.from_crops(crops, track, ckpt, finetune_steps=0, device="cpu", progress=False)


def run(avatar, clip: Path, frames: int, backend: str, size: int | None = None) -> dict:
    from talkinghead.data.landmarks import get_detector
    from talkinghead.infer.live import (LiveDriver, LivePipeline, OnnxAvatarRenderer, TorchRenderer,
                                        VideoFileSource, compose_view)

    renderer = OnnxAvatarRenderer(avatar, size=size) if backend == "onnx" else TorchRenderer(avatar, size=size)
    driver = LiveDriver(avatar.reference_landmarks, get_detector("dlib"))
    source = VideoFileSource(clip, realtime=True, loop=True)
    pipeline = LivePipeline(source, driver, renderer, max_frames=frames)
    for frame in pipeline.frames():  # "shown": composed at the rendered size as `live` does (not displayed)
        compose_view(frame, pipeline.current_fps(), None)
    return pipeline.stats.summary()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", type=Path, default=DEFAULT_CLIP, help="driving video (played at its native rate)")
    ap.add_argument("--frames", type=int, default=200, help="frames captured per row")
    ap.add_argument("--rows", nargs="+", default=["128-torch", "128-onnx", "256-torch", "256-onnx", "256-small",
                                                  "256-paper"])
    args = ap.parse_args()
    torch.set_num_threads(1)  # as `talkinghead live`: tracking and capture run beside rendering
    load = os.getloadavg()[0]
    from talkinghead.data.video import probe_video

    info = probe_video(args.clip)
    print(f"# live benchmark: {args.clip.name} ({info.width}x{info.height} at {info.fps:g} fps), "
          f"{args.frames} frames per row; {os.cpu_count()} cores, load average {load:.1f} at start\n")
    print("| row | size | renderer | shown/s | dropped/offered | latency median | latency p90 | track ms | render ms "
          "| mouth ms | load after |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    folder = Path(tempfile.mkdtemp())
    for row in args.rows:
        size, kind = row.split("-")
        out_size = None
        if kind in ("torch", "onnx"):
            avatar, backend, label, out_size = bundled_avatar(), kind, "bundled small", int(size)
        else:
            avatar, backend, label = random_avatar(kind, int(size), folder), "torch", f"{kind} (random)"
        s = run(avatar, args.clip, args.frames, backend, out_size)
        print(f"| {label} | {size} | {backend} | {s['fps']:.1f} | {s['dropped']}/{s['offered']} | "
              f"{s['latency_ms_median']:.0f} ms | {s['latency_ms_p90']:.0f} ms | {s['track_ms_median']:.1f} | "
              f"{s['render_ms_median']:.1f} | {s['finish_ms_median']:.1f} | {os.getloadavg()[0]:.1f} |", flush=True)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
