"""Shared fixtures: what the package ships or makes (a synthetic prepared data set, the
astronaut portrait, an avatar of it, a talking clip the bundled model renders, clips and frames
made from it) and the path of the shared real-face data, for the few tests that need real
faces: ``$TALKINGHEAD_TEST_DATA``, else ``../shared/data/faces`` beside the repository (as CI)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

SHARED_FACES = Path(os.environ.get("TALKINGHEAD_TEST_DATA")
                    or Path(__file__).resolve().parents[2] / "shared" / "data" / "faces")


@pytest.fixture(scope="session")
def shared_faces() -> Path:
    if not (SHARED_FACES / "manifest.csv").is_file():
        pytest.skip(f"shared face data not found at {SHARED_FACES} (set $TALKINGHEAD_TEST_DATA)")
    return SHARED_FACES


def make_synthetic_dataset(root: Path, videos: int = 3, frames: int = 8, size: int = 64, seed: int = 0) -> Path:
    """Write a prepared data set of synthetic faces: each video has its own skin tone and
    background; frames vary mouth opening, smile and head pose."""
    from talkinghead.data.store import build_index, clip_relpath, write_clip
    from talkinghead.data.synthetic import move_landmarks, render_synthetic_face, template_landmarks

    rng = np.random.default_rng(seed)
    for v in range(videos):
        skin = tuple(int(c) for c in rng.integers(120, 230, 3))
        background = tuple(int(c) for c in rng.integers(20, 120, 3))
        images, marks = [], []
        for _ in range(frames):
            pts = template_landmarks(size, mouth_open=rng.uniform(0, 0.06), smile=rng.uniform(0, 0.02))
            pts = move_landmarks(pts, dx=rng.uniform(-2, 2), dy=rng.uniform(-2, 2), angle_deg=rng.uniform(-5, 5))
            images.append(render_synthetic_face(pts, size, skin, background))
            marks.append(pts)
        valid = np.ones(frames, bool)
        identity = f"person{v}"
        write_clip(root / clip_relpath(identity, f"{identity}_clip"), images, np.stack(marks), valid,
                   np.tile([size / 2, size / 2, size], (frames, 1)),
                   dict(identity=identity, video=f"video{v}", clip=f"{identity}_clip", fps=25, size=size,
                        source="synthetic"))
    build_index(root)
    return root


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic_data"))


@pytest.fixture
def start_process():
    """``start(args, **popen_kwargs)``: a subprocess with text stdout/stderr pipes. Any still
    running when the test ends (an assertion failed before it stopped) is killed."""
    procs: list[subprocess.Popen] = []

    def start(args, **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def astronaut_avatar(tmp_path_factory):
    """A feed-forward avatar of scikit-image's astronaut on the bundled model (built once)."""
    from skimage import data

    from talkinghead.infer.avatar import Avatar
    from talkinghead.infer.bundled import BUNDLED_CHECKPOINT

    avatar = Avatar.from_images([data.astronaut()], BUNDLED_CHECKPOINT, finetune_steps=0, device="cpu",
                                progress=False)
    avatar.save(tmp_path_factory.mktemp("astronaut") / "astronaut.avatar")
    return avatar


@pytest.fixture(scope="session")
def rendered_driver(astronaut_avatar, tmp_path_factory) -> Path:
    """A talking-face clip made only of what the package ships: the astronaut avatar driven by
    the bundled landmark track (every 2nd frame, 48 frames), enlarged to 256 px, 25 fps, with a
    1-kHz tone as its audio track."""
    import wave

    import cv2

    from talkinghead.data.video import write_video
    from talkinghead.infer.bundled import ASSETS
    from talkinghead.infer.reenact import adapt_landmarks

    folder = tmp_path_factory.mktemp("driver")
    track = np.load(ASSETS / "demo_track.npy")[:96:2]
    marks = adapt_landmarks(track, astronaut_avatar.reference_landmarks, mode="relative", reference=0)
    frames = [cv2.resize(f, (256, 256), interpolation=cv2.INTER_CUBIC)
              for f in astronaut_avatar.animate(marks, progress=False)]
    tone = folder / "tone.wav"
    samples = (np.sin(2 * np.pi * 1000 * np.arange(16000 * 2) / 16000) * 8000).astype("<i2")
    with wave.open(str(tone), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(samples.tobytes())
    clip = folder / "driver.mp4"
    write_video(clip, frames, 25, audio_from=tone)
    return clip


@pytest.fixture(scope="session")
def astronaut_png(tmp_path_factory) -> Path:
    """scikit-image's astronaut (512 × 512, one frontal face) as a PNG file."""
    from PIL import Image
    from skimage import data

    path = tmp_path_factory.mktemp("portrait") / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    return path


@pytest.fixture(scope="session")
def shipped_clips(rendered_driver, tmp_path_factory) -> dict[str, Path]:
    """Talking clips made from :func:`rendered_driver`: ``tight`` (256 × 256, 25 fps, with audio),
    ``wide`` (the face in a 640 × 360 frame, 30 fps, silent), ``frames`` (a folder of its first
    30 frames as JPEGs) and ``other`` (its second half mirrored: another clip of a talking face)."""
    from PIL import Image

    from talkinghead.data.video import read_frames, write_video

    folder = tmp_path_factory.mktemp("clips")
    frames = read_frames(rendered_driver)
    wide = np.full((len(frames), 360, 640, 3), 96, np.uint8)
    wide[:, 52:308, 300:556] = frames
    write_video(folder / "wide.mp4", wide, 30)
    stills = folder / "frames"
    stills.mkdir()
    for t, frame in enumerate(frames[:30]):
        Image.fromarray(frame).save(stills / f"{t:05d}.jpg", quality=95)
    write_video(folder / "other.mp4", frames[len(frames) // 2:, :, ::-1], 25)
    return {"tight": rendered_driver, "wide": folder / "wide.mp4", "frames": stills, "other": folder / "other.mp4"}
