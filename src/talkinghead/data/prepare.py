"""`talkinghead prepare`: videos → a data set of square face crops with 68 landmarks.

Per clip: decode (PyAV) → track landmarks (:func:`tracking.track_landmarks`) → crop boxes
from landmarks, smoothed over time (:mod:`crop`) → crop + resize every frame → JPEG →
one clip file (:func:`store.write_clip`, atomic). Clips run in parallel in a process pool,
one detector per worker; an existing clip file is "already done" (resumable), and
``--shard I/N`` splits the sorted clip list between N processes or machines.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from talkinghead import signals
from talkinghead.data import store
from talkinghead.data.video import (IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, is_image_file, is_video_file,
                                    iter_frames, list_frame_files, probe_video)
from talkinghead.errors import TalkingHeadError
from talkinghead.fileio import atomic_path, ensure_writable_dir, os_error_message

log = logging.getLogger(__name__)

PREVIEW_NAME = "preview.png"
#: Frames are kept in memory between the tracking pass and the cropping pass up to this
#: many bytes per clip; longer clips are decoded twice (decoding is ~1–4 ms a frame, cheaper
#: than holding 1000 frames of 1080p).
FRAME_CACHE_BYTES = 768 * 2**20
PREVIEW_PER_CLIP = 4
PREVIEW_THUMB = 128
PREVIEW_MAX_CLIPS = 60


# -- sources ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClipSource:
    """One clip to prepare: a video file or a folder of frames."""

    clip: str  # unique, stable id: "identity/video/clip" with repeated parts dropped
    identity: str
    video: str
    path: Path
    #: The identity is only a file or folder name (no identity folder, no manifest): two such
    #: clips with the same name in different folders are different people.
    named_by_file: bool = False

    @property
    def relpath(self) -> str:
        """Where the clip file goes, relative to the data set root."""
        parts = self.clip.split("/")
        name = "_".join(parts[1:]) if len(parts) > 1 and parts[0] == self.identity else self.clip
        return store.clip_relpath(self.identity, name.replace("/", "_"))


def _clip_id(*parts: str) -> str:
    kept: list[str] = []
    for part in parts:
        if part and (not kept or kept[-1] != part):
            kept.append(part)
    return "/".join(kept)


def _resolved(path: Path) -> Path:
    """``path`` made absolute with links followed; a link that loops (or another unresolvable
    one) stays as named, so that its clip fails alone, skipped and listed, not the whole run."""
    try:
        return path.resolve()
    except (RuntimeError, OSError):  # Python < 3.13 reports a symlink loop as RuntimeError
        return path.absolute()


def _from_layout(root: Path, item: Path) -> ClipSource:
    """Identity/video/clip from a path under ``root``: VoxCeleb2's ``<identity>/<video>/<clip>``,
    ``<identity>/<clip>``, or a flat folder (identity = file or folder name)."""
    rel = item.relative_to(root)
    parts = list(rel.parent.parts) + [item.name if item.is_dir() else item.stem]
    if len(parts) >= 3:
        identity, video, clip = parts[-3], parts[-2], parts[-1]
    elif len(parts) == 2:
        identity, video, clip = parts[0], parts[1], parts[1]
    else:
        identity = video = clip = parts[0]
        return ClipSource(clip, identity, video, _resolved(item), named_by_file=True)
    return ClipSource(_clip_id(identity, video, clip), identity, video, _resolved(item))


def _read_manifest(csv_path: Path, notes: list[str]) -> list[ClipSource]:
    """Rows ``identity,path[,kind]``; paths relative to the CSV's folder. Image rows are not clips."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TalkingHeadError(f"{csv_path}: not a readable CSV manifest ({exc})") from None
    if not rows or not {"identity", "path"} <= set(rows[0]):
        raise TalkingHeadError(f"{csv_path}: a manifest needs 'identity' and 'path' columns")
    clips, images = [], 0
    for row in rows:
        rel = (row.get("path") or "").strip()
        if not rel:
            continue
        kind = (row.get("kind") or "").strip().lower()
        path = (csv_path.parent / rel)
        if kind.startswith("image") or (is_image_file(path) and not path.is_dir()):
            images += 1
            continue
        identity = (row.get("identity") or "").strip() or path.stem
        stem = path.stem if path.suffix.lower() in VIDEO_EXTENSIONS else path.name
        clips.append(ClipSource(_clip_id(identity, stem), identity, stem, _resolved(path)))
    if images:
        notes.append(f"{csv_path}: {images} image rows are not clips, left out")
    return clips


def _walk_folder(root: Path, notes: list[str]) -> list[ClipSource]:
    """Video files and frame folders (≥ 2 images, no videos) anywhere under ``root``."""
    if (root / "manifest.csv").is_file():
        return _read_manifest(root / "manifest.csv", notes)
    clips = []
    stray_images = 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        here = Path(folder)
        videos = [f for f in sorted(files) if Path(f).suffix.lower() in VIDEO_EXTENSIONS and not f.startswith(".")]
        images = [f for f in files if Path(f).suffix.lower() in IMAGE_EXTENSIONS and not f.startswith(".")]
        clips.extend(_from_layout(root, here / f) for f in videos)
        if not videos and len(images) >= 2:
            if here == root:
                clips.append(ClipSource(root.name, root.name, root.name, _resolved(root), named_by_file=True))
            else:
                clips.append(_from_layout(root, here))
        else:
            stray_images += len(images)
    if stray_images:
        notes.append(f"{root}: {stray_images} single images are not clips, left out")
    return clips


def discover_sources(sources: list[str | os.PathLike]) -> tuple[list[ClipSource], list[str]]:
    """Expand command-line sources into clips. Returns (clips sorted by id, notes).

    Accepts video files, frame folders, folders of videos (VoxCeleb2 layout understood),
    CSV manifests (``identity,path[,kind]``) and folders holding a ``manifest.csv``.
    A source that does not exist is an error (a typo should not silently shrink a data set);
    an explicitly named file that is not a video becomes a clip that fails (and is reported).
    """
    clips: list[ClipSource] = []
    notes: list[str] = []
    for src in sources:
        path = Path(src).expanduser()
        if not path.exists():
            raise TalkingHeadError(f"{path}: no such file or folder")
        if path.is_dir():
            clips.extend(_walk_folder(path, notes))
        elif path.suffix.lower() == ".csv":
            clips.extend(_read_manifest(path, notes))
        elif is_image_file(path):
            notes.append(f"{path}: an image, not a clip, left out")
        else:
            clips.append(ClipSource(path.stem, path.stem, path.stem, _resolved(path), named_by_file=True))
    # Same path twice (a folder and a file in it): keep one. Same id, different files: disambiguate.
    unique: dict[Path, ClipSource] = {}
    for c in clips:
        unique.setdefault(c.path, c)
    counts = Counter(c.clip for c in unique.values())
    out = []
    renamed: Counter = Counter()
    for c in unique.values():
        if counts[c.clip] > 1:
            tag = hashlib.sha1(str(c.path).encode()).hexdigest()[:6]
            if c.named_by_file:  # same file name, other folder: another person, not another clip
                renamed[c.clip] += 1
                name = f"{c.identity}~{tag}"
                c = ClipSource(f"{c.clip}~{tag}", name, name, c.path, named_by_file=True)
            else:
                c = ClipSource(f"{c.clip}~{tag}", c.identity, c.video, c.path)
        out.append(c)
    for name, n in sorted(renamed.items()):
        notes.append(f"{n} clips named {name!r} in different folders: kept as {n} identities ({name}~<hash>)")
    return sorted(out, key=lambda c: c.clip), notes


def parse_shard(text: str | None) -> tuple[int, int]:
    """'I/N' (1-based) → (I, N); None → (1, 1)."""
    if not text:
        return 1, 1
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise TalkingHeadError(f"bad --shard {text!r}: expected I/N, e.g. 2/8") from None
    if not (n >= 1 and 1 <= i <= n):
        raise TalkingHeadError(f"bad --shard {text!r}: need 1 <= I <= N")
    return i, n


def select_shard(clips: list[ClipSource], shard: tuple[int, int]) -> list[ClipSource]:
    i, n = shard
    ordered = sorted(clips, key=lambda c: c.clip)
    return ordered[i - 1::n]


# -- one clip (runs in a worker) ---------------------------------------------------------------

@dataclass
class ClipResult:
    clip: str
    status: str  # "done" | "skipped" | "unwritable" (the data set folder refused the clip: ends the run)
    reason: str = ""
    frames: int = 0
    valid: int = 0
    seconds: dict = field(default_factory=dict)  # per stage
    faces: int = 0  # most faces seen in one detection
    damaged: int = 0  # frames lost to damaged packets in the video (skipped by the decoder)
    source: str = ""  # the clip's file or folder, for messages
    preview: list = field(default_factory=list)  # (S', S', 3) thumbnails with landmarks
    #: Frames by tracking status and the check against fresh detections (as in the index row).
    tracking: dict = field(default_factory=dict)


@dataclass
class PrepareOptions:
    size: int = 256
    min_valid: float = 0.5
    max_frames: int | None = None
    detector: str = "dlib"
    preview: bool = False
    quality: int = 95
    #: False: detect the face in every frame instead of tracking (the benchmark's reference).
    track: bool = True
    #: Frames per clip (evenly spread) on which the track is compared with a fresh detection,
    #: for the index; 0: no check.
    check_frames: int = 4


_WORKER_DETECTOR = {}


def _worker_init() -> None:
    """One thread per worker for OpenCV (parallelism comes from the pool); the detector is
    loaded on first use and kept for the worker's lifetime."""
    import cv2

    # SIGTERM sent to the whole process group: end the clip through its `finally`s (no temp file).
    signals.install_cli_handlers()
    cv2.setNumThreads(1)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"


def _detector(name: str):
    from talkinghead.data.landmarks import get_detector

    if name not in _WORKER_DETECTOR:
        _WORKER_DETECTOR[name] = get_detector(name)
    return _WORKER_DETECTOR[name]


class _Timed:
    """Wraps a frame iterator, adding the time spent in it to ``seconds[key]``, and caching
    frames while they fit in ``budget`` bytes."""

    def __init__(self, frames: Iterator[np.ndarray], seconds: dict, key: str, budget: int = 0):
        self.frames, self.seconds, self.key, self.budget = frames, seconds, key, budget
        self.cache: list[np.ndarray] | None = [] if budget > 0 else None
        self.cached_bytes = 0
        self.shape: tuple[int, ...] | None = None  # (H, W, 3) of the first frame

    def __iter__(self):
        while True:
            start = time.perf_counter()
            frame = next(self.frames, None)
            self.seconds[self.key] = self.seconds.get(self.key, 0.0) + time.perf_counter() - start
            if frame is None:
                return
            if self.shape is None:
                self.shape = frame.shape
            if self.cache is not None:
                self.cached_bytes += frame.nbytes
                if self.cached_bytes > self.budget:
                    self.cache = None  # too long to hold: the crop pass decodes again
                else:
                    self.cache.append(frame)
            yield frame


def _reason(exc: Exception, path: Path) -> str:
    """A TalkingHeadError message without the leading '<path>: ' (the clip id is shown)."""
    text = str(exc)
    for prefix in (f"{path}: ", f"{_resolved(path)}: "):
        if text.startswith(prefix):
            return text[len(prefix):]
    return text


def prepare_clip(source: ClipSource, out_root: Path, options: PrepareOptions) -> ClipResult:
    """Prepare one clip into ``out_root``. Never raises for a bad clip: returns "skipped"; when
    the clip cannot be written (a full disk, a read-only folder) returns "unwritable"."""
    from talkinghead.data.crop import (crop_square, fit_boxes_in_frame, landmarks_to_crop, smooth_boxes,
                                       square_box_from_landmarks)
    from talkinghead.data.landmarks import detect_every_frame
    from talkinghead.data.tracking import (TrackCheck, fresh_landmarks, status_counts, stronger_detectors,
                                           track_landmarks)

    seconds: dict[str, float] = {}
    started = time.perf_counter()
    try:
        info = probe_video(source.path)
        decode_report: dict = {}
        frames = _Timed(iter_frames(source.path, options.max_frames, report=decode_report), seconds, "decode",
                        FRAME_CACHE_BYTES)
        if options.track:
            landmarks, valid, stats = track_landmarks(frames, _detector(options.detector))
        else:
            start = time.perf_counter()
            landmarks, valid = detect_every_frame(frames, _detector(options.detector))
            stats = {"detect_s": time.perf_counter() - start - seconds.get("decode", 0.0),
                     "predict_s": 0.0, "faces": 1}
    except TalkingHeadError as exc:
        return ClipResult(source.clip, "skipped", _reason(exc, source.path))
    seconds["detect"] = stats["detect_s"]
    seconds["landmarks"] = stats["predict_s"]
    count, n_valid = len(valid), int(valid.sum())
    result = ClipResult(source.clip, "skipped", frames=count, valid=n_valid, faces=stats["faces"],
                        damaged=int(decode_report.get("lost", 0)))
    if n_valid == 0:
        result.reason = "no face found"
        return result
    if n_valid < options.min_valid * count:
        result.reason = (f"a face in only {n_valid} of {count} frames "
                         f"({100 * n_valid / count:.0f}% < --min-valid {100 * options.min_valid:.0f}%)")
        return result

    raw_boxes = np.full((count, 3), np.nan, np.float32)
    for t in np.flatnonzero(valid):
        raw_boxes[t] = square_box_from_landmarks(landmarks[t])
    height, width = frames.shape[:2]
    boxes = fit_boxes_in_frame(smooth_boxes(raw_boxes, valid), width, height)

    from talkinghead.data.store import encode_jpeg

    if frames.cache is not None and len(frames.cache) == count:
        second_pass: Iterator[np.ndarray] = iter(frames.cache)
    else:
        second_pass = iter(_Timed(iter_frames(source.path, count), seconds, "decode"))
    jpegs: list[bytes] = []
    crop_landmarks = np.full((count, 68, 2), np.nan, np.float32)
    # The tracking check: the track against a fresh detection over the whole frame (HOG, then
    # HOG on a frame twice as large; the CNN would cost more than the clip) on frames spread over it.
    check_detectors = stronger_detectors(_detector(options.detector), cnn=False)
    check = TrackCheck()
    check_at = set(np.linspace(0, count - 1, options.check_frames).round().astype(int)) \
        if options.track and options.check_frames > 0 else set()
    preview_at = set(np.flatnonzero(valid)[np.linspace(0, n_valid - 1, PREVIEW_PER_CLIP).round().astype(int)]) \
        if options.preview else set()
    thumbs = []
    size = options.size
    for t in range(count):
        frame = next(second_pass, None)  # a re-decode is timed by its _Timed wrapper
        if frame is None:  # the second decode ended early (should not happen): stop here
            break
        start = time.perf_counter()
        crop = crop_square(frame, boxes[t], size)
        if valid[t]:
            crop_landmarks[t] = landmarks_to_crop(landmarks[t], boxes[t], size)
        seconds["crop"] = seconds.get("crop", 0.0) + time.perf_counter() - start
        start = time.perf_counter()
        jpegs.append(encode_jpeg(crop, options.quality))
        seconds["jpeg"] = seconds.get("jpeg", 0.0) + time.perf_counter() - start
        if t in preview_at:
            thumbs.append(draw_preview_thumb(crop, crop_landmarks[t]))
        if t in check_at:
            start = time.perf_counter()
            check.add(t, landmarks[t] if valid[t] else None,
                      fresh_landmarks(frame, _detector(options.detector), check_detectors))
            seconds["check"] = seconds.get("check", 0.0) + time.perf_counter() - start
    frames.cache = None
    count = len(jpegs)
    valid = valid[:count]
    meta = {
        "identity": source.identity,
        "video": source.video,
        "clip": source.clip,
        "source": str(source.path),
        "fps": f"{info.fps:.6g}",
        "size": size,
        "width": width,
        "height": height,
        "detector": getattr(_detector(options.detector), "name", options.detector),
    }
    if options.track:
        result.tracking = {**status_counts(stats), "check": check.summary()}
        meta["tracking"] = json.dumps(result.tracking)
    start = time.perf_counter()
    try:
        store.write_clip(out_root / source.relpath, jpegs, crop_landmarks[:count], valid, boxes[:count], meta)
    except Exception as exc:  # OSError, or safetensors' own error type wrapping one
        reason = str(exc) if isinstance(exc, TalkingHeadError) else os_error_message(exc)
        if reason is None:
            raise
        return ClipResult(source.clip, "unwritable", reason, count, int(valid.sum()))
    seconds["write"] = time.perf_counter() - start
    seconds["total"] = time.perf_counter() - started
    result.status, result.frames, result.valid = "done", count, int(valid.sum())
    result.seconds, result.preview = seconds, thumbs
    return result


def _run_in_worker(source: ClipSource, out_root: Path, options: PrepareOptions) -> ClipResult:
    try:
        return prepare_clip(source, out_root, options)
    except Exception as exc:  # a bug or a library crash on one clip must not end the run
        log.debug("clip %s failed", source.clip, exc_info=True)
        return ClipResult(source.clip, "skipped", f"internal error ({type(exc).__name__}: {exc})")


# -- preview ----------------------------------------------------------------------------------

def draw_preview_thumb(crop: np.ndarray, landmarks: np.ndarray, thumb: int = PREVIEW_THUMB) -> np.ndarray:
    """A (thumb, thumb, 3) copy of a crop with its (68, 2) landmarks drawn as green dots."""
    import cv2

    image = cv2.resize(crop, (thumb, thumb), interpolation=cv2.INTER_AREA)
    if np.isfinite(landmarks).all():
        scale = thumb / crop.shape[0]
        for x, y in landmarks:
            cv2.circle(image, (int(round((x + 0.5) * scale - 0.5)), int(round((y + 0.5) * scale - 0.5))),
                       1, (0, 255, 0), -1, cv2.LINE_AA)
    return image


def _thumbs_from_file(path: Path) -> list[np.ndarray]:
    reader = store.ClipReader(path)
    good = reader.valid_indices
    if len(good) == 0:
        return []
    picks = good[np.linspace(0, len(good) - 1, PREVIEW_PER_CLIP).round().astype(int)]
    return [draw_preview_thumb(reader.frame(int(t)), reader.landmarks[int(t)]) for t in picks]


def write_preview(path: Path, strips: list[tuple[str, list[np.ndarray]]], columns: int = 3) -> None:
    """A PNG grid: one strip of thumbnails per clip, labelled with the clip id."""
    import cv2

    strips = [(name, thumbs) for name, thumbs in strips if thumbs][:PREVIEW_MAX_CLIPS]
    if not strips:
        return
    columns = min(columns, len(strips))  # one or two clips: no empty canvas beside them
    label_h, gap = 16, 6
    strip_w = PREVIEW_PER_CLIP * PREVIEW_THUMB
    cell_h = label_h + PREVIEW_THUMB + gap
    rows = (len(strips) + columns - 1) // columns
    canvas = np.full((rows * cell_h, columns * (strip_w + gap), 3), 32, np.uint8)
    for k, (name, thumbs) in enumerate(strips):
        r, c = divmod(k, columns)
        y, x = r * cell_h, c * (strip_w + gap)
        cv2.putText(canvas, name[:60], (x + 2, y + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (230, 230, 230), 1, cv2.LINE_AA)
        for j, th in enumerate(thumbs[:PREVIEW_PER_CLIP]):
            canvas[y + label_h:y + label_h + PREVIEW_THUMB, x + j * PREVIEW_THUMB:x + (j + 1) * PREVIEW_THUMB] = th
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR)):  # OpenCV does not raise
            raise TalkingHeadError(f"{path}: could not write the preview (disk full?)")


# -- the run ----------------------------------------------------------------------------------

@dataclass
class PrepareSummary:
    done: list[ClipResult] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    skipped: list[ClipResult] = field(default_factory=list)
    wall: float = 0.0
    workers: int = 1
    index: dict = field(default_factory=dict)

    @property
    def frames_processed(self) -> int:
        return sum(r.frames for r in self.done) + sum(r.frames for r in self.skipped)

    def stage_seconds(self) -> dict[str, float]:
        total: Counter = Counter()
        for r in self.done:
            total.update(r.seconds)
        return dict(total)

    def lines(self, out_root: Path) -> list[str]:
        kept = sum(r.valid for r in self.done)
        flagged = sum(r.frames - r.valid for r in self.done)
        lost = sum(r.frames for r in self.skipped)
        rate = self.frames_processed / self.wall if self.wall > 0 else 0.0
        out = [
            f"prepared {len(self.done)} clips, {len(self.already)} already done, {len(self.skipped)} skipped "
            f"-> {out_root}",
            f"frames: {kept} kept with landmarks, {flagged} without a face (stored, flagged invalid), "
            f"{lost} in skipped clips",
            f"time: {self.wall:.1f} s, {rate:.1f} frames/s with {self.workers} worker(s)",
        ]
        stages = self.stage_seconds()
        busy = sum(v for k, v in stages.items() if k != "total")
        if busy > 0:
            parts = ", ".join(f"{k} {100 * v / busy:.0f}%" for k, v in sorted(stages.items(), key=lambda kv: -kv[1])
                              if k != "total")
            out.append(f"worker time: {parts}")
        damaged = [f"{r.clip} ({r.damaged})" for r in self.done + self.skipped if r.damaged]
        if damaged:
            out.append(f"damaged frames skipped (undecodable packets): {', '.join(damaged)}")
        out += self.tracking_lines()
        several = [r.clip for r in self.done if r.faces > 1]
        if several:
            out.append(f"several faces, picked the largest: {', '.join(several)}")
        out += [f"skipped: {r.clip}: {r.reason}" for r in self.skipped]
        if self.index:
            out.append(f"index: {len(self.index['clips'])} clips, {self.index['identities']} identities, "
                       f"{self.index['valid_frames']} valid frames -> {out_root / store.INDEX_NAME}")
        return out

    def tracking_lines(self) -> list[str]:
        """How often the tracker re-detected, held and lost the face, and the clips whose track
        is off a fresh detection by more than OFF_FACE on a checked frame."""
        from talkinghead.data.tracking import OFF_FACE, describe_tracking

        tracked = [r for r in self.done if r.tracking]
        if not tracked:
            return []
        totals = Counter()
        for r in tracked:
            totals.update({k: v for k, v in r.tracking.items() if k != "check"})
        checks = [(r.clip, r.tracking["check"]) for r in tracked]
        checked = sum(c["checked"] for _, c in checks)
        off = [f"{clip} ({c['off']} of {c['checked']})" for clip, c in checks if c["off"]]
        worst = max((c["max"] for _, c in checks if c["max"] is not None), default=0.0)
        return [f"{describe_tracking(totals)} (in {len(tracked)} clips)",
                f"tracking check: {checked} sampled frames against a fresh detection, largest error "
                f"{worst:.2f} inter-ocular distances; off by > {OFF_FACE} in {len(off)} clips"
                + (f": {', '.join(off)}" if off else "")]


def prepare_dataset(sources: list[str], out_root: str | os.PathLike, options: PrepareOptions,
                    workers: int | None = None, shard: str | None = None, overwrite: bool = False,
                    progress: bool = True) -> PrepareSummary:
    """The whole ``talkinghead prepare`` run (see module docstring). Raises TalkingHeadError
    (exit 2) for bad input: no sources, bad shard, output not writable."""
    from tqdm import tqdm

    shard_pair = parse_shard(shard)
    if options.size < 16:
        raise TalkingHeadError(f"--size {options.size} is too small (at least 16)")
    if not 0.0 <= options.min_valid <= 1.0:
        raise TalkingHeadError(f"--min-valid {options.min_valid} must be between 0 and 1")
    created = not Path(out_root).exists()
    out_root = ensure_writable_dir(out_root)
    _check_same_size(out_root, options.size)
    clips, notes = discover_sources(sources)
    for note in notes:
        log.info("%s", note)
    if not clips:
        raise TalkingHeadError(f"{', '.join(map(str, sources))}: no video files or frame folders found")
    clips = select_shard(clips, shard_pair)
    summary = PrepareSummary()
    todo = []
    for c in clips:
        if not overwrite and (out_root / c.relpath).is_file():
            summary.already.append(c.clip)
        else:
            todo.append(c)
    # Longest clips first, so the pool is not left waiting on one long clip at the end.
    sizes = {c.clip: _estimate_frames(c.path, options.max_frames) for c in todo}
    todo.sort(key=lambda c: -sizes[c.clip])
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    summary.workers = workers
    started = time.perf_counter()
    bar = tqdm(total=sum(sizes.values()), unit="frame", desc="prepare", disable=not progress or not todo,
               dynamic_ncols=True, file=sys.stderr)
    previews: dict[str, list[np.ndarray]] = {}

    paths = {c.clip: str(c.path) for c in todo}

    def record(res: ClipResult, estimate: int) -> None:
        res.source = res.source or paths.get(res.clip, "")
        if res.status == "unwritable":  # every further clip would fail the same way: stop, no index
            kept = f"; the {len(summary.done)} clip(s) written before are kept (run again to resume)" \
                if summary.done else ""
            raise TalkingHeadError(f"cannot write into the data set {out_root}: {res.reason}{kept}")
        (summary.done if res.status == "done" else summary.skipped).append(res)
        if res.preview:
            previews[res.clip] = res.preview
        res.preview = []
        bar.update(estimate)
        elapsed = time.perf_counter() - started
        bar.set_postfix(clips=f"{len(summary.done) + len(summary.skipped)}/{len(todo)}",
                        fps=f"{summary.frames_processed / max(elapsed, 1e-6):.0f}", refresh=False)

    try:
        if workers == 1:
            _worker_init_parent()
            for c in todo:
                record(_run_in_worker(c, out_root, options), sizes[c.clip])
        else:
            _run_pool(todo, out_root, options, workers, lambda r: record(r, sizes[r.clip]))
    except TalkingHeadError:
        if created:
            _remove_empty_folders(out_root)
        raise
    finally:
        bar.close()
    summary.wall = time.perf_counter() - started
    summary.index = store.build_index(out_root)
    if options.preview:
        strips = []
        for c in sorted(clips, key=lambda c: c.clip):
            if c.clip in previews:
                strips.append((c.clip, previews[c.clip]))
            elif (out_root / c.relpath).is_file():
                try:
                    strips.append((c.clip, _thumbs_from_file(out_root / c.relpath)))
                except TalkingHeadError:
                    pass
        write_preview(out_root / PREVIEW_NAME, strips)
    return summary


def _check_same_size(out_root: Path, size: int) -> None:
    """A data set holds one crop size: refuse to add ``size`` crops to a set of another size."""
    if not (out_root / store.INDEX_NAME).is_file():
        return
    try:
        existing = store.load_index(out_root).get("size")
    except TalkingHeadError:
        return  # an unreadable index is rebuilt at the end
    sizes = sorted(set(existing if isinstance(existing, list) else [existing]) - {None, 0})
    if sizes and sizes != [size]:
        held = " and ".join(f"{s}-px" for s in sizes)
        raise TalkingHeadError(f"{out_root}: holds {held} crops; --size {size} would mix sizes in one data set "
                               f"(use --size {sizes[0]}, or another --out)")


def _remove_empty_folders(root: Path) -> None:
    """Remove ``root`` and the folders under it that hold no file (a run that made ``root`` and
    then could not write into it leaves nothing behind)."""
    for folder, _, _ in sorted(os.walk(root), key=lambda entry: -len(entry[0])):
        try:
            os.rmdir(folder)  # only succeeds when empty
        except OSError:
            pass


def _worker_init_parent() -> None:
    import cv2

    cv2.setNumThreads(1)


def _run_pool(todo: list[ClipSource], out_root: Path, options: PrepareOptions, workers: int, on_result) -> None:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn, not fork: the parent may hold threads (tqdm, FFmpeg) that fork would copy half-way.
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                             initializer=_worker_init) as pool:
        futures = {pool.submit(_run_in_worker, c, out_root, options): c for c in todo}
        try:
            for fut in as_completed(futures):
                try:
                    res = fut.result()
                except Exception as exc:  # a worker died (out of memory, a crash in a C library)
                    res = ClipResult(futures[fut].clip, "skipped", f"worker failed ({type(exc).__name__}: {exc})")
                on_result(res)
        except (KeyboardInterrupt, signals.Terminated, TalkingHeadError):
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _estimate_frames(path: Path, max_frames: int | None) -> int:
    try:
        if path.is_dir():
            n = len(list_frame_files(path))
        elif is_video_file(path):
            n = probe_video(path).frames
        else:
            n = 1
    except TalkingHeadError:
        n = 1
    return max(1, min(n, max_frames) if max_frames else n)


# -- merge ------------------------------------------------------------------------------------

def merge_datasets(target: str | os.PathLike, others: list[str | os.PathLike] = ()) -> tuple[dict, int]:
    """Bring the clip files of ``others`` into ``target`` (hard links where possible, else
    copies; a clip already in ``target`` is kept) and rebuild ``target``'s index.
    Returns (index, number of clip files added)."""
    target = ensure_writable_dir(target)
    added = 0
    for other in others:
        other = Path(other)
        clips_dir = other / store.CLIPS_DIR
        if not clips_dir.is_dir():
            raise TalkingHeadError(f"{other}: not a prepared data set (no {store.CLIPS_DIR}/ folder)")
        for src in sorted(clips_dir.rglob("*.safetensors")):
            if src.name.startswith("."):
                continue  # a temporary file of a run still writing
            dest = target / src.relative_to(other)
            if dest.exists():
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(dest) as tmp:
                tmp.unlink()
                try:
                    os.link(src, tmp)
                except OSError:
                    shutil.copy2(src, tmp)
            added += 1
    if not (target / store.CLIPS_DIR).is_dir():
        raise TalkingHeadError(f"{target}: not a prepared data set (no {store.CLIPS_DIR}/ folder)")
    return store.build_index(target), added
