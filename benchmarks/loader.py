"""Can the data loader feed a GPU? Episodes/s through the real training DataLoader, per worker,
for the ``paper`` preset, against the rate an H100 consumes; and the video index at VoxCeleb2
scale.

    python benchmarks/loader.py                          # 1 and 2 workers, index of 2·10⁸ frames
    python benchmarks/loader.py --workers 1 2 4 8 --index-frames 2e8

1. Writes a synthetic prepared data set at 256 px (JPEG crops with texture, so decoding costs
   about what a real face crop costs) and times ``talkinghead.train.trainer.episode_loader``
   (the loader training uses: uint8 episodes, K = 8 shots + 1 target, batch 6) after a warm-up
   batch, for each worker count.
2. Counts the FLOPs of one ``paper`` meta-learning step (``meta_step`` on the ``meta`` device
   under torch's FlopCounterMode: no compute) and derives the episodes/s and decoded frames/s an
   H100 needs at 40 % of its dense bf16 peak, and the workers that implies.
3. Builds the :class:`~talkinghead.data.episodes.VideoIndex` of a simulated data set of
   ``--index-frames`` frames (VoxCeleb2: ~2·10⁸ frames, 145k videos, ~1.1M clips) from its
   ``index.json``: start-up time (parse + index) and memory held per frame.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

from talkinghead.config import get_preset

H100_BF16_PEAK = 989e12  # dense bf16 FLOP/s (SXM)
UTILISATION = 0.40


def write_dataset(root: Path, videos: int, frames: int, size: int, seed: int = 0) -> Path:
    from talkinghead.data.store import build_index, clip_relpath, write_clip
    from talkinghead.data.synthetic import move_landmarks, render_synthetic_face, template_landmarks

    rng = np.random.default_rng(seed)
    for v in range(videos):
        skin = tuple(int(c) for c in rng.integers(120, 230, 3))
        background = tuple(int(c) for c in rng.integers(20, 120, 3))
        texture = rng.normal(0, 12, (size, size, 3))  # skin/hair-like detail: real crops are not flat
        images, marks = [], []
        for _ in range(frames):
            pts = template_landmarks(size, mouth_open=rng.uniform(0, 0.06), smile=rng.uniform(0, 0.02))
            pts = move_landmarks(pts, dx=rng.uniform(-4, 4), dy=rng.uniform(-4, 4), angle_deg=rng.uniform(-8, 8))
            face = render_synthetic_face(pts, size, skin, background).astype(np.float32) + texture
            images.append(np.clip(face, 0, 255).astype(np.uint8))
            marks.append(pts)
        identity = f"person{v}"
        write_clip(root / clip_relpath(identity, f"{identity}_clip"), images, np.stack(marks), np.ones(frames, bool),
                   np.tile([size / 2, size / 2, size], (frames, 1)),
                   dict(identity=identity, video=f"video{v}", clip=f"{identity}_clip", fps=25, size=size))
    build_index(root)
    return root


def loader_rate(root: Path, config, workers: int, batches: int) -> tuple[float, float]:
    """(episodes/s, frames/s) through the training DataLoader with ``workers`` workers."""
    from talkinghead.data.episodes import EpisodeDataset
    from talkinghead.train.distributed import DistInfo
    from talkinghead.train.trainer import episode_loader

    tc = config.train
    cfg = config.override([f"train.num_workers={workers}"])
    dataset = EpisodeDataset(root, shots=tc.shots, size=config.model.image_size, seed=0)
    loader = iter(episode_loader(dataset, cfg, DistInfo()))
    next(loader)  # warm-up: worker start, first clip opens
    start = time.perf_counter()
    for _ in range(batches):
        batch = next(loader)
    elapsed = time.perf_counter() - start
    assert batch["frames"].dtype == torch.uint8
    episodes = batches * tc.batch_size
    return episodes / elapsed, episodes * (tc.shots + 1) / elapsed


def cpu_seconds_per_episode(root: Path, config, episodes: int) -> float:
    """CPU time (not wall time) one process spends making an episode: the rate of one worker
    on a core of its own, whatever else the machine is running."""
    from talkinghead.data.episodes import EpisodeDataset

    dataset = EpisodeDataset(root, shots=config.train.shots, size=config.model.image_size, seed=0)
    dataset[(0, 0)]  # warm-up: clip opens
    start = time.process_time()
    for i in range(episodes):
        dataset[(1 + i // len(dataset), i % len(dataset))]
    return (time.process_time() - start) / episodes


def step_flops(config) -> float:
    """FLOPs of one meta-learning step (E+G update, D updates, content loss) for ``config``."""
    from torch.utils.flop_counter import FlopCounterMode

    from talkinghead.losses.content import ContentLoss
    from talkinghead.losses.vgg import VGG19Features
    from talkinghead.models import build_models
    from talkinghead.train.meta import MetaNetworks, meta_step
    from talkinghead.train.trainer import build_optimizers

    tc, s = config.train, config.model.image_size
    device = torch.device("meta")
    with device:
        E, G, D = build_models(config.model, num_videos=tc.batch_size)
        content = ContentLoss(VGG19Features(), None, config.loss)  # VGG19 term; the face term is not counted
    opts = build_optimizers(E, G, D, config, torch.device("cpu"))

    def batch():
        u8 = dict(dtype=torch.uint8, device=device)
        return {"frames": torch.zeros(tc.batch_size, tc.shots, 3, s, s, **u8),
                "sketches": torch.zeros(tc.batch_size, tc.shots, 3, s, s, **u8),
                "target": torch.zeros(tc.batch_size, 3, s, s, **u8),
                "target_sketch": torch.zeros(tc.batch_size, 3, s, s, **u8),
                "video_index": torch.arange(tc.batch_size, device=device)}

    extra = tuple(batch() for _ in range(max(tc.disc_steps - 1, 0))) if tc.disc_fresh_batches else ()
    with FlopCounterMode(display=False) as counter:
        meta_step(batch(), MetaNetworks.from_models(E, G, D, opts, content), config, device, disc_batches=extra)
    return float(counter.get_total_flops())


def index_at_scale(frames: float, clips: int, videos: int) -> dict:
    """Start-up time and memory of the video index of a simulated data set."""
    from talkinghead.data.episodes import VideoIndex
    from talkinghead.data.store import clip_rows

    per_clip = int(round(frames / clips))
    identities = max(1, videos * 6000 // 145_000)  # VoxCeleb2: 6k identities, 145k videos

    def row(c: int) -> dict:
        video = c * videos // clips
        identity = f"id{video * identities // videos:05d}"
        return {"clip": f"c{c:07d}", "identity": identity, "video": f"v{video:06d}",
                "path": f"clips/{identity}/c{c:07d}.safetensors", "frames": per_clip + 5,
                "valid_frames": per_clip, "fps": 25.0, "size": 256, "source": ""}

    rows = [row(c) for c in range(clips)]
    text = json.dumps({"format": "talkinghead-dataset", "version": 1, "clips": rows})
    del rows
    start = time.perf_counter()
    index_json = json.loads(text)
    parsed = time.perf_counter()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    index = VideoIndex("/data/vox2", clip_rows(index_json), min_frames=9)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    built = time.perf_counter()
    # timing of the index itself without tracemalloc's overhead
    t0 = time.perf_counter()
    VideoIndex("/data/vox2", clip_rows(index_json), min_frames=9)
    untraced = time.perf_counter() - t0
    return {"frames": index.total_frames, "clips": clips, "videos": len(index), "json_mb": len(text) / 1e6,
            "parse_s": parsed - start, "index_s": untraced, "held_bytes": held,
            "bytes_per_frame": held / index.total_frames, "traced_index_s": built - parsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batches", type=int, default=10, help="timed batches per worker count")
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--frames-per-video", type=int, default=40)
    parser.add_argument("--index-frames", type=float, default=2e8)
    parser.add_argument("--index-clips", type=int, default=1_100_000)
    parser.add_argument("--index-videos", type=int, default=145_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = get_preset("paper")
    tc = config.train
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"paper preset: batch {tc.batch_size} episodes, K = {tc.shots}, {config.model.image_size} px, "
          f"{'fresh D batches' if tc.disc_fresh_batches else 'one batch'} ({1 + (tc.disc_steps - 1) * tc.disc_fresh_batches} "
          f"batches per step); {cores} cores, load average {os.getloadavg()[0]:.1f}")

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        root = write_dataset(Path(tmp), args.videos, args.frames_per_video, config.model.image_size)
        print(f"synthetic data set: {args.videos} videos × {args.frames_per_video} frames at "
              f"{config.model.image_size} px ({sum(p.stat().st_size for p in root.rglob('*.safetensors')) / args.videos / args.frames_per_video / 1e3:.1f} kB/frame JPEG), "
              f"written in {time.perf_counter() - t0:.0f} s")
        cpu_s = cpu_seconds_per_episode(root, config, 4 * args.videos)
        print(f"  CPU time per episode (one process): {1e3 * cpu_s:.1f} ms = {1 / cpu_s:.0f} episodes/s "
              f"= {(tc.shots + 1) / cpu_s:.0f} frames/s per dedicated core")
        rates = {}
        for workers in args.workers:
            episodes, frames = loader_rate(root, config, workers, args.batches)
            rates[workers] = episodes
            print(f"  {workers} worker(s): {episodes:6.1f} episodes/s, {frames:6.0f} frames/s "
                  f"({episodes / workers:.1f} episodes/s per worker)")

    flops = step_flops(config)
    batches_per_step = 1 + (max(tc.disc_steps - 1, 0) if tc.disc_fresh_batches else 0)
    steps_per_s = UTILISATION * H100_BF16_PEAK / flops
    need_episodes = steps_per_s * tc.batch_size * batches_per_step
    per_worker = 1 / cpu_s
    print(f"one paper step: {flops / 1e12:.2f} TFLOP (FlopCounterMode; VGG19 content term counted, face term not)")
    print(f"H100 at {UTILISATION:.0%} of {H100_BF16_PEAK / 1e12:.0f} TFLOP/s bf16: {steps_per_s:.1f} steps/s = "
          f"{need_episodes:.0f} episodes/s = {need_episodes * (tc.shots + 1):.0f} decoded frames + sketches/s")
    print(f"workers (cores) needed per GPU at {per_worker:.0f} episodes/s per dedicated core: "
          f"{need_episodes / per_worker:.0f}; the DataLoader wall-clock rates above also count the other "
          f"processes sharing these {cores} cores")

    t0 = time.perf_counter()
    scale = index_at_scale(args.index_frames, args.index_clips, args.index_videos)
    print(f"index of {scale['frames']:.3g} simulated frames ({scale['clips']:,} clips, {scale['videos']:,} videos; "
          f"index.json {scale['json_mb']:.0f} MB): parse {scale['parse_s']:.1f} s + index {scale['index_s']:.1f} s; "
          f"holds {scale['held_bytes'] / 1e6:.1f} MB = {scale['bytes_per_frame']:.2f} bytes/frame "
          f"(a Python tuple per frame: ~64 bytes/frame = {64 * scale['frames'] / 1e9:.1f} GB)")


if __name__ == "__main__":
    main()
