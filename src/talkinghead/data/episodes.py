"""Datasets over a prepared data set (see :mod:`talkinghead.data.store`).

* :class:`EpisodeDataset` — meta-learning episodes (paper, sec. 3.2): for video i, K + 1
  distinct frames; K (frame, sketch) pairs go to the embedder, one (frame, sketch) is the
  target that G must render, and i indexes the discriminator's per-video row W_i.
* :class:`VideoIndex` — where every video's valid frames lie, in numpy arrays (no per-frame
  Python objects); :func:`load_videos` gives per-video views of it (evaluation).

Episodes are worker-safe (each worker opens its own memory-mapped clip files) and seedable:
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

from talkinghead.data.landmarks import mirror_landmarks
from talkinghead.data.sketch import landmarks_to_sketch
from talkinghead.data.store import ClipCache, ClipInfo, clip_rows, load_index
from talkinghead.errors import TalkingHeadError


class VideoIndex:
    """Where the valid frames of every video lie, in a few numpy arrays.

    At VoxCeleb2 scale (145k videos, ~1M clips, ~2·10⁸ frames) a per-frame Python tuple
    would cost ~64 bytes a frame (13 GB per rank). Here the index holds, per clip, its path
    (one fixed-width byte string), video number and valid-frame count, and per video its first
    clip and a cumulative frame count: no per-frame storage at all. A clip file is opened
    only when one of its frames is drawn (:meth:`locate`); its valid frame numbers come from
    the file then.
    """

    def __init__(self, root: str | os.PathLike, rows: list[ClipInfo], min_frames: int = 2):
        self.root = Path(root)
        grouped: dict[str, list[ClipInfo]] = {}
        for row in rows:
            grouped.setdefault(f"{row.identity}/{row.video}", []).append(row)
        kept = sorted((key, clips) for key, clips in grouped.items()
                      if sum(c.valid_frames for c in clips) >= min_frames)
        self.keys: list[str] = [key for key, _ in kept]
        self.identities: list[str] = [clips[0].identity for _, clips in kept]
        clips = [c for _, group in kept for c in group]
        #: (clips,) relative paths, fixed-width bytes.
        self.clip_paths = np.array([c.path.encode() for c in clips], dtype=np.bytes_)
        #: (clips,) valid frames per clip.
        self.clip_valid = np.array([c.valid_frames for c in clips], dtype=np.int32)
        counts = np.array([len(group) for _, group in kept], dtype=np.int64)
        #: (videos + 1,) first clip of each video (and the end).
        self.video_clip_start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        #: (clips + 1,) valid frames before each clip, counted within its video.
        within = np.zeros(len(clips) + 1, dtype=np.int64)
        for v in range(len(self.keys)):
            a, b = self.video_clip_start[v], self.video_clip_start[v + 1]
            within[a + 1:b + 1] = np.cumsum(self.clip_valid[a:b])
        self.clip_frame_start = within

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def nbytes(self) -> int:
        """Bytes held in the numpy arrays."""
        return sum(a.nbytes for a in (self.clip_paths, self.clip_valid, self.video_clip_start,
                                      self.clip_frame_start))

    @property
    def total_frames(self) -> int:
        return int(self.clip_valid.sum())

    def num_frames(self, video: int) -> int:
        """Valid frames of video ``video``."""
        return int(self.clip_frame_start[self.video_clip_start[video + 1]])

    def locate(self, video: int, j: int, cache: ClipCache) -> tuple[str, int]:
        """The ``j``-th valid frame of ``video`` as (clip path, frame number in the clip)."""
        a, b = int(self.video_clip_start[video]), int(self.video_clip_start[video + 1])
        starts = self.clip_frame_start[a + 1:b + 1]
        c = a + int(np.searchsorted(starts, j, side="right"))
        offset = j - int(self.clip_frame_start[c]) if c > a else j
        path = str(self.root / self.clip_paths[c].decode())
        valid = cache.get(path).valid_indices
        if offset >= len(valid):
            raise TalkingHeadError(f"{path}: the index lists {self.clip_valid[c]} valid frames, the file has "
                                   f"{len(valid)}; rebuild the data set's index (delete index.json)")
        return path, int(valid[offset])


@dataclass
class Video:
    """One video of a :class:`VideoIndex`: ``frames[j]`` is its j-th valid frame as
    ``(clip path, frame number)``; the clip is opened on first access."""

    key: str
    identity: str
    frames: "VideoFrames"


class VideoFrames:
    """A lazy sequence of a video's valid frames (see :class:`Video`)."""

    def __init__(self, index: VideoIndex, video: int, cache: ClipCache | None = None):
        self.index, self.video = index, video
        self.cache = cache or ClipCache(capacity=8)
        self._len = index.num_frames(video)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, j: int) -> tuple[str, int]:
        if not -self._len <= j < self._len:
            raise IndexError(j)
        return self.index.locate(self.video, j % self._len, self.cache)


def load_index_arrays(root: str | os.PathLike, identities: Iterable[str] | None = None,
                      min_frames: int = 2) -> VideoIndex:
    """The :class:`VideoIndex` of a data set's videos with at least ``min_frames`` valid frames."""
    root = Path(root)
    index = VideoIndex(root, clip_rows(load_index(root), identities, min_valid=1), min_frames)
    if not len(index):
        raise TalkingHeadError(
            f"{root}: no video with at least {min_frames} valid frames"
            + (" for the requested identities" if identities is not None else "")
        )
    return index


def load_videos(root: str | os.PathLike, identities: Iterable[str] | None = None,
                min_frames: int = 2) -> list[Video]:
    """A data set's videos with at least ``min_frames`` valid frames, sorted by key."""
    index = load_index_arrays(root, identities, min_frames)
    return [Video(key, identity, VideoFrames(index, v))
            for v, (key, identity) in enumerate(zip(index.keys, index.identities))]


class FrameSource:
    """Reads a frame and its landmarks at the requested size, with optional augmentation."""

    def __init__(self, size: int | None, augment: bool):
        self.size = size
        self.augment = augment
        self.cache = ClipCache()

    def load_uint8(self, clip_path: str, t: int, flip: bool, gain: np.ndarray | None):
        """(image (3, S, S) uint8, sketch (3, S, S) uint8, landmarks (68, 2) float32)."""
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
            landmarks = mirror_landmarks(landmarks, size)
        if gain is not None:
            image = np.clip(image.astype(np.float32) * gain, 0, 255).astype(np.uint8)
        sketch = landmarks_to_sketch(landmarks, size)
        return _chw(image), _chw(sketch), torch.from_numpy(landmarks)

    def load(self, clip_path: str, t: int, flip: bool, gain: np.ndarray | None):
        """(image (3, S, S) float in [-1, 1], sketch (3, S, S) float in [-1, 1], landmarks (68, 2))."""
        image, sketch, landmarks = self.load_uint8(clip_path, t, flip, gain)
        return to_unit_range(image), to_unit_range(sketch), landmarks


def _chw(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) uint8 tensor."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous()


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 images (…, 3, H, W) -> float32 in [-1, 1] (the same values as ``image_to_tensor``)."""
    return x.float().div_(127.5).sub_(1.0)


class EpisodeDataset(Dataset):
    """Meta-learning episodes.

    Item ``i`` (a video) returns a dict; images travel as uint8 (4× less than float32 through
    the DataLoader's shared memory) and the trainer maps them to [-1, 1] on the device
    (:func:`to_unit_range`):
        ``frames``          (K, 3, S, S) uint8 — the embedder's K frames x_i(s_k)
        ``sketches``        (K, 3, S, S) uint8 — their landmark sketches y_i(s_k)
        ``landmarks``       (K, 68, 2) — their landmarks, in pixels of the S×S crop
        ``target``          (3, S, S) uint8 — the frame x_i(t) G must reproduce
        ``target_sketch``   (3, S, S) uint8 — its sketch y_i(t)
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
        self.index = load_index_arrays(root, identities, min_frames=shots + 1)
        self.source = FrameSource(size, augment)

    @property
    def keys(self) -> list[str]:
        """Video keys ("identity/video"), in the order of D's rows W."""
        return self.index.keys

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor | int]:
        """``key`` is a video index, or ``(epoch, video index)`` as :class:`EpisodeSampler` yields."""
        epoch, i = key if isinstance(key, tuple) else (0, key)
        rng = np.random.default_rng((self.seed, epoch, i))
        picks = rng.choice(self.index.num_frames(i), size=self.shots + 1, replace=False)
        flip = bool(self.source.augment and rng.random() < 0.5)
        gain = rng.uniform(0.9, 1.1, size=3).astype(np.float32) if self.source.augment else None
        loaded = [self.source.load_uint8(*self.index.locate(i, int(j), self.source.cache), flip, gain)
                  for j in picks]
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


def worker_init(_worker_id: int) -> None:
    """DataLoader workers decode with one OpenCV thread each: N workers × all-core OpenCV pools
    oversubscribe the CPU and slow every worker down. They ignore Ctrl-C and SIGTERM (sent to
    the whole process group): the training process stops at a step boundary and then shuts
    them down; a worker killed first would fail the batches still in flight."""
    import signal

    cv2.setNumThreads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def default_num_workers(local_world_size: int = 1) -> int:
    """Loader workers per rank from the CPU cores: cores per local rank − 1 (for the training
    process itself), between 1 and 12."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(12, cores // max(local_world_size, 1) - 1))


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
