"""data/video.py: decoding videos, frame folders and images; writing mp4 with audio."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from talkinghead.data.video import iter_frames, probe_video, read_frames, read_image, write_video
from talkinghead.errors import TalkingHeadError


def _gradient_frame(i: int, w: int = 64, h: int = 48) -> np.ndarray:
    """A frame whose brightness encodes its index (survives H.264 within a few levels)."""
    frame = np.zeros((h, w, 3), np.uint8)
    frame[..., 0] = (i * 20) % 250
    frame[..., 1] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    frame[..., 2] = 128
    return frame


def make_video(path: Path, frames: int = 12, fps: int = 25, audio: str | None = "aac", size=(64, 48)) -> Path:
    """A small H.264 video; with ``audio`` a 440 Hz sine track 1.5× longer than the video."""
    out = av.open(str(path), "w")
    video = out.add_stream("libx264", rate=fps)
    video.width, video.height = size
    video.pix_fmt = "yuv420p"
    sound = None
    if audio:
        sound = out.add_stream(audio, rate=16000)
        sound.layout = "mono"
    for i in range(frames):
        for packet in video.encode(av.VideoFrame.from_ndarray(_gradient_frame(i, *size), format="rgb24")):
            out.mux(packet)
    for packet in video.encode():
        out.mux(packet)
    if sound is not None:
        rate = 16000
        t = np.arange(int(rate * frames / fps * 1.5)) / rate
        wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        fmt = "fltp"
        if audio.startswith("pcm_s16"):
            wave, fmt = (wave * 32767).astype(np.int16), "s16"
        for k in range(0, len(wave), 1024):
            chunk = av.AudioFrame.from_ndarray(wave[None, k:k + 1024], format=fmt, layout="mono")
            chunk.sample_rate, chunk.pts = rate, k
            for packet in sound.encode(chunk):
                out.mux(packet)
        for packet in sound.encode():
            out.mux(packet)
    out.close()
    return path


def _streams(path: Path) -> dict:
    with av.open(str(path)) as c:
        return {s.type: (s.codec_context.name, float(s.duration * s.time_base) if s.duration else None)
                for s in c.streams}


def test_decode_video_file(tmp_path):
    path = make_video(tmp_path / "clip.mp4", frames=12)
    info = probe_video(path)
    assert (info.width, info.height, info.fps, info.has_audio) == (64, 48, 25.0, True)
    frames = list(iter_frames(path))
    assert len(frames) == 12
    assert frames[0].shape == (48, 64, 3) and frames[0].dtype == np.uint8
    # frame order is kept: the red channel encodes the index
    reds = [int(f[..., 0].mean()) for f in frames]
    assert all(abs(r - (i * 20) % 250) <= 6 for i, r in enumerate(reds)), reds
    assert len(list(iter_frames(path, max_frames=5))) == 5


def test_decode_frame_folder_natural_order(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in (0, 1, 2, 10):  # "10" must come after "2", not after "1"
        cv2.imwrite(str(folder / f"f{i}.png"), cv2.cvtColor(_gradient_frame(i), cv2.COLOR_RGB2BGR))
    (folder / "notes.txt").write_text("not a frame")
    frames = read_frames(folder)
    assert frames.shape == (4, 48, 64, 3)
    assert [int(f[..., 0].mean()) for f in frames] == [0, 20, 40, 200]
    assert probe_video(folder).frames == 4


def test_read_image_converts_gray_rgba_and_exif(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((10, 20), 77, np.uint8), "L").save(tmp_path / "gray.png")
    assert read_image(tmp_path / "gray.png").shape == (10, 20, 3)
    rgba = np.zeros((10, 20, 4), np.uint8)
    rgba[..., 0] = 255  # red, fully transparent on the left half
    rgba[:, 10:, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    img = read_image(tmp_path / "rgba.png")
    assert img.shape == (10, 20, 3)
    assert tuple(img[0, 0]) == (255, 255, 255) and tuple(img[0, 15]) == (255, 0, 0)
    # EXIF orientation 6 (rotate 90° clockwise to display): a 20×10 file shows as 10 wide, 20 tall
    im = Image.fromarray(np.zeros((10, 20, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(tmp_path / "rotated.jpg", exif=exif)
    assert read_image(tmp_path / "rotated.jpg").shape == (20, 10, 3)
    single = list(iter_frames(tmp_path / "gray.png"))
    assert len(single) == 1 and single[0].shape == (10, 20, 3)


def test_write_video_round_trip_with_audio(tmp_path):
    src = make_video(tmp_path / "talk.mp4", frames=20, fps=25, audio="aac")
    frames = [_gradient_frame(i, 66, 50) for i in range(20)]
    out = tmp_path / "out" / "result.mp4"
    assert write_video(out, frames, fps=25, audio_from=src) == 20
    info = probe_video(out)
    assert (info.width, info.height, info.fps, info.has_audio) == (66, 50, 25.0, True)
    assert len(list(iter_frames(out))) == 20
    streams = _streams(out)
    assert streams["video"][0] == "h264" and streams["audio"][0] == "aac"
    # the source's audio is 1.2 s; it is cut at the video's 0.8 s (within one AAC frame)
    assert streams["audio"][1] == pytest.approx(0.8, abs=0.07)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp files left


def test_write_video_reencodes_pcm_audio_and_odd_sizes(tmp_path):
    src = make_video(tmp_path / "talk.mov", frames=10, fps=25, audio="pcm_s16le")
    out = tmp_path / "result.mp4"
    frames = [np.full((49, 65, 3), 100, np.uint8)] * 10  # odd: cropped to 64×48 for yuv420p
    assert write_video(out, iter(frames), fps=Fraction(30000, 1001), audio_from=src) == 10
    info = probe_video(out)
    assert (info.width, info.height) == (64, 48)
    assert info.fps == pytest.approx(29.97, abs=0.01)
    assert _streams(out)["audio"][0] == "aac"


def test_write_video_without_audio_source(tmp_path):
    out = tmp_path / "silent.mp4"
    assert write_video(out, [np.zeros((32, 32, 3), np.uint8)] * 3, fps=10, audio_from=None) == 3
    assert not probe_video(out).has_audio
    with pytest.raises(TalkingHeadError, match="no frames"):
        write_video(tmp_path / "empty.mp4", [], fps=10)
    assert not (tmp_path / "empty.mp4").exists()


def test_truncated_and_fake_videos_name_the_file(tmp_path):
    src = make_video(tmp_path / "good.mp4", frames=12, audio=None)
    data = src.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 3])
    fake = tmp_path / "fake.mp4"
    fake.write_text("this is not a video")
    for bad in (truncated, fake):
        with pytest.raises(TalkingHeadError) as err:
            list(iter_frames(bad))
        message = str(err.value)
        assert message.startswith(f"{bad}: not a readable video"), message
        assert "\n" not in message
        with pytest.raises(TalkingHeadError, match="not a readable video"):
            probe_video(bad)


def test_missing_and_empty_inputs(tmp_path):
    with pytest.raises(TalkingHeadError, match="no such file"):
        list(iter_frames(tmp_path / "missing.mp4"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TalkingHeadError, match=r"empty: no image files"):
        list(iter_frames(empty))
    with pytest.raises(TalkingHeadError, match="not a readable image"):
        (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really")
        read_image(tmp_path / "broken.jpg")
