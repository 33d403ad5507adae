"""Datasets over a prepared data set (see :mod:`talkinghead.data.store`).

* :class:`EpisodeDataset` — meta-learning episodes (paper, sec. 3.2): for video i, K + 1
  distinct frames; K (frame, sketch) pairs go to the embedder, one (frame, sketch) is the
  target that G must render, and i indexes the discriminator's per-video row W_i.
* :class:`FrameDataset` — single (frame, sketch, landmarks) samples, for fine-tuning and evaluation.

Both are worker-safe (each worker opens its own memory-mapped clip files) and seedable:
the frames drawn for item ``i`` depend only on ``(seed, epoch, i)``, never on worker
scheduling, so a resumed run sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from talkinghead.data.sketch import image_to_tensor, landmarks_to_sketch, sketch_to_tensor
from talkinghead.data.store import ClipCache, ClipInfo, clip_rows, load_index
from talkinghead.errors import TalkingHeadError

#: Index permutation that mirrors the 68-point scheme left↔right (for horizontal flips).
MIRROR_68 = np.array(
    list(range(16, -1, -1))  # jaw
    + list(range(26, 21, -1)) + list(range(21, 16, -1))  # brows
    + list(range(27, 31))  # nose bridge
    + [35, 34, 33, 32, 31]  # nose base
    + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40]  # eyes
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]  # outer lip
    + [64, 63, 62, 61, 60, 67, 66, 65]  # inner lip
)


@dataclass
class Video:
    """A video's valid frames, possibly spread over several clips (VoxCeleb2 utterances)."""

    key: str
    identity: str
    frames: list[tuple[str, int]]  # (clip path, frame number) of every valid frame


def load_videos(root: str | os.PathLike, identities: Iterable[str] | None = None,
                min_frames: int = 2) -> list[Video]:
    """Group a data set's clips into videos, keeping videos with at least ``min_frames`` valid frames."""
    from talkinghead.data.store import ClipReader

    root = Path(root)
    index = load_index(root)
    rows: list[ClipInfo] = clip_rows(index, identities, min_valid=1)
    grouped: dict[str, Video] = {}
    for row in rows:
        key = f"{row.identity}/{row.video}"
        video = grouped.setdefault(key, Video(key, row.identity, []))
        reader = ClipReader(root / row.path)
        video.frames.extend((str(root / row.path), int(t)) for t in reader.valid_indices)
    videos = [v for v in grouped.values() if len(v.frames) >= min_frames]
    if not videos:
        raise TalkingHeadError(
            f"{root}: no video with at least {min_frames} valid frames"
            + (" for the requested identities" if identities is not None else "")
        )
    return sorted(videos, key=lambda v: v.key)


class _FrameSource:
    """Reads a frame and its landmarks at the requested size, with optional augmentation."""

    def __init__(self, size: int | None, augment: bool):
        self.size = size
        self.augment = augment
        self.cache = ClipCache()

    def load(self, clip_path: str, t: int, flip: bool, gain: np.ndarray | None):
        reader = self.cache.get(clip_path)
        image = reader.frame(t)
        landmarks = reader.landmarks[t].astype(np.float32).copy()
        size = self.size or image.shape[0]
        if image.shape[0] != size:
            scale = size / image.shape[0]
            image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
            landmarks *= scale
        if flip:
            image = image[:, ::-1]
            landmarks = landmarks[MIRROR_68]
            landmarks[:, 0] = size - 1 - landmarks[:, 0]
        if gain is not None:
            image = np.clip(image.astype(np.float32) * gain, 0, 255).astype(np.uint8)
        sketch = landmarks_to_sketch(landmarks, size)
        return image_to_tensor(image), sketch_to_tensor(sketch), torch.from_numpy(landmarks)


class EpisodeDataset(Dataset):
    """Meta-learning episodes.

    Item ``i`` (a video) returns a dict:
        ``frames``          (K, 3, S, S) float in [-1, 1] — the embedder's K frames x_i(s_k)
        ``sketches``        (K, 3, S, S) — their landmark sketches y_i(s_k)
        ``landmarks``       (K, 68, 2) — their landmarks, in pixels of the S×S crop
        ``target``          (3, S, S) — the frame x_i(t) G must reproduce
        ``target_sketch``   (3, S, S) — its sketch y_i(t)
        ``target_landmarks`` (68, 2) — in pixels of the S×S crop
        ``video_index``     int — row of the discriminator's W
    """

    def __init__(self, root: str | os.PathLike, shots: int, size: int | None = None,
                 identities: Iterable[str] | None = None, augment: bool = False, seed: int = 0):
        if shots < 1:
            raise TalkingHeadError(f"shots must be >= 1, got {shots}")
        self.root = Path(root)
        self.shots = shots
        self.seed = seed
        self.videos = load_videos(root, identities, min_frames=shots + 1)
        self.source = _FrameSource(size, augment)

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor | int]:
        """``key`` is a video index, or ``(epoch, video index)`` as :class:`EpisodeSampler` yields."""
        epoch, i = key if isinstance(key, tuple) else (0, key)
        video = self.videos[i]
        rng = np.random.default_rng((self.seed, epoch, i))
        picks = rng.choice(len(video.frames), size=self.shots + 1, replace=False)
        flip = bool(self.source.augment and rng.random() < 0.5)
        gain = rng.uniform(0.9, 1.1, size=3).astype(np.float32) if self.source.augment else None
        loaded = [self.source.load(*video.frames[j], flip, gain) for j in picks]
        images, sketches, landmarks = zip(*loaded)
        return {
            "frames": torch.stack(images[:-1]),
            "sketches": torch.stack(sketches[:-1]),
            "landmarks": torch.stack(landmarks[:-1]),
            "target": images[-1],
            "target_sketch": sketches[-1],
            "target_landmarks": landmarks[-1],
            "video_index": i,
        }


class FrameDataset(Dataset):
    """Every valid frame of the selected videos: dict(image (3,S,S), sketch (3,S,S),
    landmarks (68,2), video_index int)."""

    def __init__(self, root: str | os.PathLike, size: int | None = None,
                 identities: Iterable[str] | None = None, augment: bool = False, seed: int = 0):
        self.videos = load_videos(root, identities, min_frames=1)
        self.items = [(vi, f) for vi, v in enumerate(self.videos) for f in v.frames]
        self.source = _FrameSource(size, augment)
        self.seed = seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor | int]:
        video_index, (clip, t) = self.items[i]
        rng = np.random.default_rng((self.seed, i))
        flip = bool(self.source.augment and rng.random() < 0.5)
        image, sketch, landmarks = self.source.load(clip, t, flip, None)
        return {"image": image, "sketch": sketch, "landmarks": landmarks, "video_index": video_index}


class EpisodeSampler(Sampler[tuple[int, int]]):
    """Endless stream of ``(epoch, index)`` keys: indices are shuffled per epoch from
    ``(seed, epoch)`` and sharded over ``world_size`` ranks (like DistributedSampler, padded by
    wrap-around so every rank takes the same number of steps). Passing the epoch with the index
    lets persistent DataLoader workers draw the right frames without being told the epoch, and
    ``start`` (items already consumed by this rank) makes resumption exact.
    """

    def __init__(self, length: int, seed: int = 0, rank: int = 0, world_size: int = 1, start: int = 0):
        self.length = length
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start = start

    @property
    def per_rank(self) -> int:
        """Items each rank takes per epoch."""
        return -(-self.length // self.world_size)

    def epoch_order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.length, generator=g).tolist()
        total = self.per_rank * self.world_size
        order = (order * (-(-total // self.length)))[:total]
        return order[self.rank::self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, offset = divmod(self.start, self.per_rank)
        while True:
            for i in self.epoch_order(epoch)[offset:]:
                yield (epoch, i)
            epoch, offset = epoch + 1, 0
