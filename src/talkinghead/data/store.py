"""On-disk format of a prepared data set.

Layout (documented in docs/data-format.md)::

    DATASET/
      index.json                      # data set summary + one row per clip (built by merge)
      clips/<identity>/<clip>.safetensors

One safetensors file per clip holds:

    jpeg       uint8  (total_bytes,)   all frames' JPEG bytes, concatenated
    offsets    int64  (T + 1,)         frame t is jpeg[offsets[t]:offsets[t+1]]
    landmarks  float32 (T, 68, 2)      (x, y) in crop pixels; NaN where invalid
    valid      uint8  (T,)             1 where a face and its landmarks were found
    boxes      float32 (T, 3)          crop square in source pixels: (centre x, centre y, side)

and string metadata (identity, video, clip, source, fps, size, frames, valid_frames, and the
tracking figures as JSON).

Why: a loader needs random access to a few frames of a clip (K + 1 per episode) without
decoding a video; safetensors memory-maps the file and reads a slice of ``jpeg`` directly,
with no pickle involved. One file per clip keeps the file count at VoxCeleb2 scale near one
million (one per utterance) and lets N workers or machines write clips independently.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from talkinghead.errors import TalkingHeadError
from talkinghead.fileio import atomic_path, atomic_write_text

FORMAT_NAME = "talkinghead-dataset"
FORMAT_VERSION = 1
INDEX_NAME = "index.json"
CLIPS_DIR = "clips"


@dataclass
class ClipInfo:
    """One row of the index."""

    clip: str  # unique clip id within the data set
    identity: str
    video: str
    path: str  # relative to the data set root
    frames: int
    valid_frames: int
    fps: float
    size: int
    source: str
    #: ``prepare``'s tracking figures (docs/data-format.md): frames by tracking status and
    #: ``check``, the track against fresh detections on sampled frames. Empty when not recorded.
    tracking: dict = field(default_factory=dict)


def clip_relpath(identity: str, clip: str) -> str:
    return f"{CLIPS_DIR}/{_safe_name(identity)}/{_safe_name(clip)}.safetensors"


def _safe_name(name: str) -> str:
    keep = "".join(c if (c.isalnum() or c in "-_.") else "_" for c in name)
    return keep.strip(".") or "unnamed"


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    """(H, W, 3) uint8 RGB → JPEG bytes."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def decode_jpeg(data: np.ndarray | bytes) -> np.ndarray:
    """JPEG bytes → (H, W, 3) uint8 RGB."""
    arr = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else data
    img = cv2.imdecode(arr, cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("corrupt JPEG frame")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def write_clip(
    path: str | os.PathLike,
    frames: Sequence[np.ndarray] | Sequence[bytes],
    landmarks: np.ndarray,
    valid: np.ndarray,
    boxes: np.ndarray,
    meta: dict[str, str | int | float],
    quality: int = 95,
) -> None:
    """Write one clip atomically. ``frames`` are (S, S, 3) uint8 RGB crops or JPEG bytes."""
    encoded = [f if isinstance(f, (bytes, bytearray)) else encode_jpeg(f, quality) for f in frames]
    lengths = np.array([len(b) for b in encoded], dtype=np.int64)
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    blob = np.frombuffer(b"".join(encoded), dtype=np.uint8) if encoded else np.zeros(0, np.uint8)
    tensors = {
        "jpeg": blob,
        "offsets": offsets,
        "landmarks": np.ascontiguousarray(landmarks, dtype=np.float32).reshape(len(encoded), 68, 2),
        "valid": np.ascontiguousarray(valid, dtype=np.uint8).reshape(len(encoded)),
        "boxes": np.ascontiguousarray(boxes, dtype=np.float32).reshape(len(encoded), 3),
    }
    metadata = {"format": FORMAT_NAME, "version": str(FORMAT_VERSION)}
    metadata.update({k: str(v) for k, v in meta.items()})
    metadata["frames"] = str(len(encoded))
    metadata["valid_frames"] = str(int(tensors["valid"].sum()))
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


class ClipReader:
    """Random access to one clip file. Landmarks/validity are loaded eagerly (small);
    frames are decoded on demand from a memory-mapped slice."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self._file = safe_open(str(self.path), framework="numpy")
            self.meta = dict(self._file.metadata() or {})
            self.landmarks = self._file.get_tensor("landmarks")
            self.valid = self._file.get_tensor("valid").astype(bool)
            self.boxes = self._file.get_tensor("boxes")
            self.offsets = self._file.get_tensor("offsets")
            self._jpeg = self._file.get_slice("jpeg")
        except Exception as exc:  # safetensors raises several exception types
            raise TalkingHeadError(f"{self.path}: not a readable talkinghead clip ({exc})") from None
        if self.meta.get("format") != FORMAT_NAME:
            raise TalkingHeadError(f"{self.path}: not a talkinghead clip file")

    def __len__(self) -> int:
        return len(self.valid)

    @property
    def valid_indices(self) -> np.ndarray:
        """Frame numbers of the valid frames, ascending (computed once)."""
        if getattr(self, "_valid_indices", None) is None:
            self._valid_indices = np.flatnonzero(self.valid)
        return self._valid_indices

    def frame_bytes(self, t: int) -> np.ndarray:
        a, b = int(self.offsets[t]), int(self.offsets[t + 1])
        return self._jpeg[a:b]

    def frame(self, t: int) -> np.ndarray:
        """Frame ``t`` as (S, S, 3) uint8 RGB."""
        return decode_jpeg(self.frame_bytes(t))


class ClipCache:
    """A small LRU of open :class:`ClipReader` s (one per DataLoader worker)."""

    def __init__(self, capacity: int = 64):
        self.capacity = capacity
        self._open: OrderedDict[str, ClipReader] = OrderedDict()

    def get(self, path: str | os.PathLike) -> ClipReader:
        key = str(path)
        reader = self._open.pop(key, None) or ClipReader(key)
        self._open[key] = reader
        while len(self._open) > self.capacity:
            self._open.popitem(last=False)
        return reader


def read_clip_info(root: Path, relpath: str) -> ClipInfo:
    """Read one clip's index row from its header (cheap: no frame data is touched)."""
    with safe_open(str(root / relpath), framework="numpy") as f:
        m = f.metadata() or {}
    return ClipInfo(
        clip=m.get("clip", Path(relpath).stem),
        identity=m.get("identity", "unknown"),
        video=m.get("video", m.get("clip", "")),
        path=relpath,
        frames=int(m.get("frames", 0)),
        valid_frames=int(m.get("valid_frames", 0)),
        fps=float(m.get("fps", 25.0)),
        size=int(m.get("size", 0)),
        source=m.get("source", ""),
        tracking=_json_dict(m.get("tracking", "")),
    )


def _json_dict(text: str) -> dict:
    """A JSON object from clip metadata; {} when absent or not an object."""
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def build_index(root: str | os.PathLike) -> dict:
    """Scan ``root/clips`` and (re)write ``root/index.json``. This is also the merge step for
    data sets prepared in shards (``--shard I/N``) into the same folder or copied together."""
    root = Path(root)
    rows: list[ClipInfo] = []
    bad: list[str] = []
    for path in sorted((root / CLIPS_DIR).rglob("*.safetensors")):
        if path.name.startswith("."):
            continue  # a clip still being written by another shard (atomic_path's temp file)
        rel = path.relative_to(root).as_posix()
        try:
            rows.append(read_clip_info(root, rel))
        except Exception:
            bad.append(rel)
    sizes = sorted({r.size for r in rows})
    index = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "size": sizes[0] if len(sizes) == 1 else sizes,
        "clips": [asdict(r) for r in rows],
        "identities": len({r.identity for r in rows}),
        "frames": sum(r.frames for r in rows),
        "valid_frames": sum(r.valid_frames for r in rows),
        "unreadable": bad,
    }
    atomic_write_text(root / INDEX_NAME, json.dumps(index, indent=1))
    return index


def load_index(root: str | os.PathLike) -> dict:
    root = Path(root)
    path = root / INDEX_NAME
    if not path.is_file():
        if (root / CLIPS_DIR).is_dir():
            return build_index(root)
        raise TalkingHeadError(f"{root}: not a prepared data set (no {INDEX_NAME}); run `talkinghead prepare`")
    try:
        index = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TalkingHeadError(f"{path}: unreadable index ({exc})") from None
    if index.get("format") != FORMAT_NAME:
        raise TalkingHeadError(f"{path}: not a talkinghead data set index")
    return index


def clip_rows(index: dict, identities: Iterable[str] | None = None, min_valid: int = 1) -> list[ClipInfo]:
    """Index rows, optionally restricted to some identities and to clips with enough valid frames."""
    keep = set(identities) if identities is not None else None
    rows = [ClipInfo(**row) for row in index["clips"]]
    return [r for r in rows if r.valid_frames >= min_valid and (keep is None or r.identity in keep)]
