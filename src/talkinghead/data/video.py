"""Reading frames from videos, frame folders and images; writing H.264 mp4 (with audio).

Every frame crosses this module as an (H, W, 3) uint8 RGB array. Decoding and encoding go
through PyAV (FFmpeg), images through OpenCV/Pillow. User-caused problems (missing, corrupt,
empty input) raise :class:`TalkingHeadError` with one line naming the file.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from talkinghead.errors import TalkingHeadError
from talkinghead.fileio import atomic_path

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".avi", ".webm", ".mkv", ".m4v"})
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp"})


@dataclass
class VideoInfo:
    """What :func:`probe_video` learns without decoding every frame."""

    path: str
    fps: float
    frames: int  # an estimate for video files (container metadata), exact for folders/images
    width: int
    height: int
    has_audio: bool


def is_video_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _natural_key(name: str) -> list:
    """'frame10.jpg' sorts after 'frame9.jpg'."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


def list_frame_files(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder``, in natural order (hidden files ignored)."""
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.is_file() and is_image_file(p) and not p.name.startswith(".")]
    return sorted(files, key=lambda p: _natural_key(p.name))


# -- images ---------------------------------------------------------------------------------

def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB.

    EXIF orientation is applied (phone photos); grayscale, palette, 16-bit and RGBA images
    are converted (alpha is composited on white, which is what a viewer shows).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise TalkingHeadError(f"{path}: no such file")
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                background = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(background, im)
            if im.mode == "I;16" or im.mode == "I":
                # 16-bit grayscale: scale to 8 bits rather than clipping.
                arr = np.asarray(im, dtype=np.float32)
                arr = (arr / max(float(arr.max()), 1.0) * 255.0).round().astype(np.uint8)
                return np.repeat(arr[..., None], 3, axis=2)
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Image.DecompressionBombError:
        raise TalkingHeadError(f"{path}: image too large (over {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels, "
                               "Pillow's guard against decompression bombs); scale it down first") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise TalkingHeadError(f"{path}: not a readable image ({exc})") from None
    return np.ascontiguousarray(rgb)


# -- probing ----------------------------------------------------------------------------------

def _open_container(path: Path):
    import av

    if not path.exists():
        what = "a symbolic link to nothing (broken or looping)" if path.is_symlink() else "no such file"
        raise TalkingHeadError(f"{path}: {what}")
    try:
        container = av.open(ffmpeg_path(path))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise TalkingHeadError(f"{path}: not a readable video ({_short(exc)})") from None
    if not container.streams.video:
        container.close()
        raise TalkingHeadError(f"{path}: not a readable video (no video stream)")
    return container


def ffmpeg_path(path: str | os.PathLike) -> str:
    """``path`` as FFmpeg must be given it: absolute, so that a name with a colon
    (``take:1.mp4``, ``.out:1.tmp.mp4``) is a file and not a protocol (``take:``)."""
    return os.path.abspath(os.fspath(path))


def frame_rotation(frame) -> int:
    """Counter-clockwise degrees (0, 90, 180, 270) a decoded frame must be turned to display
    upright: phone videos store portrait footage sideways with a display matrix."""
    degrees = getattr(frame, "rotation", 0) or 0
    return int(round(degrees / 90.0)) % 4 * 90


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """(H, W, 3) → the image turned ``rotation`` degrees counter-clockwise (contiguous)."""
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(image, k)) if k else image


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    # PyAV prefixes "[Errno N]" and repeats the file name; the caller already names the file.
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", text)
    return text.split(": '")[0][:200]


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Frame rate, frame count (estimate), size and audio presence of a video file, a frame
    folder (25 fps assumed) or a single image (1 frame)."""
    path = Path(path)
    if path.is_dir():
        files = list_frame_files(path)
        if not files:
            raise TalkingHeadError(f"{path}: no image files")
        first = read_image(files[0])
        return VideoInfo(str(path), 25.0, len(files), first.shape[1], first.shape[0], False)
    if is_image_file(path):
        image = read_image(path)
        return VideoInfo(str(path), 25.0, 1, image.shape[1], image.shape[0], False)
    container = _open_container(path)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 25.0
        frames = int(stream.frames or 0)
        if frames <= 0:
            duration = (float(stream.duration * stream.time_base) if stream.duration and stream.time_base
                        else (container.duration or 0) / 1_000_000)
            frames = int(round(duration * fps))
        width, height = int(stream.codec_context.width), int(stream.codec_context.height)
        if _first_frame_rotation(container, stream) in (90, 270):
            width, height = height, width
        return VideoInfo(str(path), fps, frames, width, height, bool(container.streams.audio))
    finally:
        container.close()


# -- decoding ---------------------------------------------------------------------------------

def iter_frames(path: str | os.PathLike, max_frames: int | None = None,
                report: dict | None = None) -> Iterator[np.ndarray]:
    """Yield the frames of a video file, a folder of frames or a single image, as
    (H, W, 3) uint8 RGB, upright (a video's rotation metadata is applied). At most
    ``max_frames`` frames when given.

    Raises TalkingHeadError for a missing, unreadable or empty input, and when a video
    decodes to zero frames. Damaged packets in a video are skipped and decoding goes on; how
    many frames were lost is logged as a warning and, when ``report`` (a dict) is given,
    stored in ``report["lost"]`` once the video has been read to its end.
    """
    path = Path(path)
    limit = max_frames if max_frames is not None else float("inf")
    if path.is_dir():
        files = list_frame_files(path)
        if not files:
            raise TalkingHeadError(f"{path}: no image files")
        for count, file in enumerate(files):
            if count >= limit:
                return
            yield read_image(file)
        return
    if not path.exists():
        raise TalkingHeadError(f"{path}: no such file")
    if is_image_file(path):
        if limit >= 1:
            yield read_image(path)
        return
    yield from _decode_video(path, limit, report)


def _first_frame_rotation(container, stream) -> int:
    """Rotation of the first decodable frame (the display matrix is per stream)."""
    import av

    try:
        for frame in container.decode(stream):
            return frame_rotation(frame)
    except (av.FFmpegError, OSError, ValueError):
        pass
    return 0


def _decode_video(path: Path, limit: float, report: dict | None = None) -> Iterator[np.ndarray]:
    """Decode packet by packet: a damaged packet costs its own frame(s), not the rest of the
    video (decoding the stream as one stops at the first error). Frames are turned upright
    (display matrix). Lost frames are counted in ``report["lost"]`` and logged."""
    import av

    container = _open_container(path)
    count = errors = 0
    first_error = ""
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame + slice threads: ~2x faster decode on 2 cores
        expected = int(stream.frames or 0)
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except (av.FFmpegError, OSError, ValueError) as exc:
                errors += 1
                first_error = first_error or _short(exc)
                continue
            for frame in frames:
                if count >= limit:
                    break
                yield upright(frame.to_ndarray(format="rgb24"), frame_rotation(frame))
                count += 1
            if count >= limit:
                break
    except (av.FFmpegError, OSError, ValueError) as exc:  # the container itself is damaged
        errors += 1
        first_error = first_error or _short(exc)
    finally:
        container.close()
    if count == 0 and limit > 0:
        detail = first_error or "no frame could be decoded"
        raise TalkingHeadError(f"{path}: not a readable video ({detail})")
    if count < limit:  # read to the end: compare with what the container announced
        lost = max(errors, expected - count) if expected else errors
        if report is not None:
            report["lost"] = lost
            report["decoded"] = count
        if lost:
            log.warning("%s: %d damaged frame(s) could not be decoded and were skipped (%d decoded)",
                        path, lost, count)


def read_frames(path: str | os.PathLike, max_frames: int | None = None) -> np.ndarray:
    """All frames at once: (T, H, W, 3) uint8. Meant for short clips."""
    return np.stack(list(iter_frames(path, max_frames)))


# -- encoding ---------------------------------------------------------------------------------

def _even(n: int) -> int:
    return max(2, n - (n % 2))


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float,
    audio_from: str | os.PathLike | None = None,
    crf: int = 18,
) -> int:
    """Encode (H, W, 3) uint8 RGB frames as an H.264 (libx264, yuv420p) mp4, atomically.

    Odd widths/heights are cropped by one pixel (yuv420p needs even sizes). When
    ``audio_from`` is a media file with an audio stream, its audio is copied into the output
    (re-encoded to AAC when the codec cannot go into mp4) and cut at the video's length.
    Returns the number of frames written; zero frames is an error.
    """
    import av

    path = Path(path)
    rate = Fraction(fps).limit_denominator(1001) if fps and 0 < fps < float("inf") else Fraction(25)
    if rate == 0:  # e.g. a driver whose header claims 0.0001 frames/s
        raise TalkingHeadError(f"{path}: cannot write a video at {fps:g} frames/s")
    frame_iter = iter(frames)
    first = next(frame_iter, None)
    if first is None:
        raise TalkingHeadError(f"{path}: no frames to write")
    first = _as_rgb(first)
    height, width = _even(first.shape[0]), _even(first.shape[1])
    audio_source = _open_audio_source(audio_from)
    written = 0
    try:
        with atomic_path(path, suffix=".mp4") as tmp:
            out = av.open(ffmpeg_path(tmp), mode="w", format="mp4")
            try:
                # Every stream must exist before the first packet is muxed (the header is written then).
                vstream = out.add_stream("libx264", rate=rate)
                vstream.width, vstream.height = width, height
                vstream.pix_fmt = "yuv420p"
                vstream.options = {"crf": str(crf), "preset": "medium"}
                vstream.codec_context.time_base = Fraction(1) / rate
                audio = _AudioCopier(audio_source, out) if audio_source is not None else None
                image = first
                while image is not None:
                    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:height, :width]), format="rgb24")
                    frame.pts = written
                    frame.time_base = Fraction(1) / rate
                    for packet in vstream.encode(frame):
                        out.mux(packet)
                    written += 1
                    if audio is not None:  # interleave: keep audio just ahead of the video
                        audio.pump(until=written / float(rate))
                    nxt = next(frame_iter, None)
                    image = _as_rgb(nxt) if nxt is not None else None
                for packet in vstream.encode():
                    out.mux(packet)
                if audio is not None:
                    audio.finish(duration=written / float(rate))
            finally:
                out.close()
            _check_written(tmp, path, written)
    finally:
        if audio_source is not None:
            audio_source.close()
    return written


def _check_written(tmp: Path, target: Path, frames: int) -> None:
    """FFmpeg can lose a write error (a full disk) on the way out; reopen the file before it is
    renamed into place, so a truncated video is never left where the output should be."""
    import av

    try:
        with av.open(ffmpeg_path(tmp)) as check:
            stored = int(check.streams.video[0].frames or 0) if check.streams.video else 0
    except (av.FFmpegError, OSError, ValueError, IndexError):
        stored = -1
    if stored != frames:
        raise TalkingHeadError(f"{target}: writing the video failed ({frames} frames encoded, "
                               f"{max(stored, 0)} in the file; is the disk full?)")


def _as_rgb(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"frames must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    return image


def _open_audio_source(audio_from):
    """An open container whose first audio stream is to be copied, or None."""
    import av

    if audio_from is None:
        return None
    audio_path = Path(audio_from)
    if not audio_path.is_file():
        return None  # frame folders / images have no audio: nothing to copy
    try:
        container = av.open(ffmpeg_path(audio_path))
    except (av.FFmpegError, OSError, ValueError):
        return None
    if not container.streams.audio:
        container.close()
        return None
    return container


class _AudioCopier:
    """Copies ``source``'s first audio stream into ``out`` in step with the video.

    AAC/MP3/ALAC/Opus packets are remuxed as they are (no quality loss); anything else
    (PCM in a .mov, Vorbis in a .webm, ...) is decoded and re-encoded to AAC. Audio past
    the video's end is dropped.
    """

    REMUX_CODECS = ("aac", "mp3", "alac", "opus")

    def __init__(self, source, out):
        import av

        self.out = out
        self.in_stream = source.streams.audio[0]
        ctx = self.in_stream.codec_context
        self.remux = ctx.name in self.REMUX_CODECS
        self.done = False
        self.time = 0.0  # seconds of audio muxed so far
        if self.remux:
            self.stream = out.add_stream_from_template(self.in_stream)
            self._packets = source.demux(self.in_stream)
        else:
            self.sample_rate = ctx.sample_rate or 48000
            self.stream = out.add_stream("aac", rate=self.sample_rate)
            layout = "stereo" if ctx.layout.nb_channels > 1 else "mono"
            self.stream.layout = layout
            self.resampler = av.AudioResampler(format="fltp", layout=layout, rate=self.sample_rate)
            self._frames = source.decode(self.in_stream)
            self.samples = 0

    def pump(self, until: float) -> None:
        """Mux audio up to ``until`` seconds (at least)."""
        while not self.done and self.time < until:
            self._step(limit=None)

    def finish(self, duration: float) -> None:
        while not self.done:
            self._step(limit=duration)
        if not self.remux:
            for packet in self.stream.encode(None):
                self.out.mux(packet)

    def _step(self, limit: float | None) -> None:
        if self.remux:
            packet = next(self._packets, None)
            if packet is None:
                self.done = True
                return
            if packet.dts is None:  # the demuxer's final flush packet
                return
            start = float(packet.pts * packet.time_base) if packet.pts is not None else self.time
            if limit is not None and start >= limit:
                self.done = True
                return
            self.time = start + float((packet.duration or 0) * packet.time_base)
            packet.stream = self.stream
            self.out.mux(packet)
            return
        frame = next(self._frames, None)
        if frame is None:
            self.done = True
            return
        for converted in self.resampler.resample(frame):
            if limit is not None and self.samples >= limit * self.sample_rate:
                self.done = True
                return
            converted.pts = self.samples
            self.samples += converted.samples
            self.time = self.samples / self.sample_rate
            for packet in self.stream.encode(converted):
                self.out.mux(packet)
