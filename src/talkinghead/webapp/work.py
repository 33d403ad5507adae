"""The work the web app does for a session: avatars (with a still and a short head turn to show),
videos, expression stills and live frames. Runs in the job queue's threads (avatars, videos)
or in worker threads of the event loop (expression stills, live frames); never in the loop.

Output size: a session may ask for one; by default the avatar's own (its photo's face
resolution, capped at ``detail.max_size``). Stills, head turns, videos and live frames are
rendered at that size by the avatar itself (:mod:`talkinghead.infer.detail`: detail from the
photos at output resolution); only a size above the cap is enlarged afterwards.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from talkinghead.errors import TalkingHeadError
from talkinghead.infer.expression import Expression, apply_expression
from talkinghead.webapp.guard import image_header
from talkinghead.webapp.sessions import Job, LiveState, Session

#: Output sizes a user may ask for (pixels).
OUTPUT_SIZES = (64, 1024)
#: The head turn shown once an avatar is built: yaw in degrees, frame by frame (a loop).
TURN_YAWS = np.concatenate([np.linspace(0, 25, 5), np.linspace(25, -25, 11)[1:], np.linspace(-25, 0, 6)[1:-1]])
TURN_FRAME_MS = 70
#: Formats accepted for live frames and photos (Pillow's names, read from the header).
IMAGE_FORMATS = {"JPEG", "PNG", "WEBP", "BMP", "MPO"}


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return data.tobytes()


def render_size(avatar, size: int | None) -> int:
    """The size ``avatar`` renders at for a session asking for ``size`` (None: the avatar's
    output size): at most ``detail.max_size``; larger requests are enlarged from it."""
    return avatar.output_size if size is None else min(size, avatar.config.detail.max_size)


def render_poses(avatar, landmarks: np.ndarray, size: int | None = None, consecutive: bool = False,
                 on_progress=None) -> np.ndarray:
    """(T, 68, 2) landmarks → (T, size, size, 3) uint8 frames of ``avatar`` (its output size by default)."""
    frames = avatar.animate(landmarks, progress=False, consecutive=consecutive, on_progress=on_progress,
                            size=render_size(avatar, size))
    if size is None or size == frames.shape[1]:
        return frames
    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_CUBIC) for f in frames])


def check_photo(path: Path, max_pixels: float) -> None:
    """A photo upload is an image whose header says at most ``max_pixels`` pixels (nothing is decoded)."""
    header = image_header(path)
    if header is not None and header.pixels > max_pixels:
        size = "beyond Pillow's limit" if header.beyond_pillow_guard else f"{header.pixels / 1e6:.0f} megapixels"
        raise TalkingHeadError(f"{path.name}: image too large ({size}; this server takes up to "
                               f"{max_pixels / 1e6:g}); scale it down first")
    if header is None or header.format not in IMAGE_FORMATS:
        raise TalkingHeadError(f"{path.name}: not a readable image (use JPEG, PNG, WebP or BMP)")


def decode_frame(data: bytes, max_pixels: float) -> np.ndarray:
    """A live frame (JPEG/PNG bytes) → (H, W, 3) uint8 RGB, refused from its header when larger
    than ``max_pixels``."""
    header = image_header(data)
    if header is not None and header.pixels > max_pixels:
        size = "beyond Pillow's limit" if header.beyond_pillow_guard else f"{header.width}×{header.height}"
        raise TalkingHeadError(f"live frame: {size} is larger than this server takes ({max_pixels / 1e6:g} megapixels)")
    if header is None or header.format not in IMAGE_FORMATS:
        raise TalkingHeadError("live frame: not a JPEG/PNG image")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise TalkingHeadError("live frame: not a JPEG/PNG image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


# -- jobs -------------------------------------------------------------------------------------

def build_avatar(session: Session, job: Job, paths: list[Path], checkpoint, steps: int,
                 size: int | None) -> None:
    """Photos → avatar (FF with ``steps=0``, else FT) saved in the session's folder, with a still
    and a short head turn to show."""
    from talkinghead.infer.avatar import Avatar
    from talkinghead.infer.faces import crops_from_sources

    faces = crops_from_sources([str(p) for p in paths], checkpoint.config.model.image_size, progress=False,
                               on_progress=job.report, max_size=checkpoint.config.detail.max_size)
    job.notes = [session.user_message(n) for n in faces.notes]
    job.report("fine-tuning" if steps else "embedding", 0, steps or None)
    avatar = Avatar.from_crops(faces.crops, faces.landmarks, checkpoint, finetune_steps=steps, device="cpu",
                               progress=False, on_progress=job.report, crops_hi=faces.crops_hi)
    avatar.source_image, avatar.source_box = faces.source_image, faces.source_box
    job.report("showing the avatar", 0, None)
    with session.lock:
        version = session.avatar_version + 1
    still, turn = preview_files(session.folder, avatar, size, version)
    path = avatar.save(session.folder / f"avatar-{version}.avatar")
    with session.lock:
        session.avatar_version = version
        session.avatar, session.avatar_file, session.output_size = avatar, path, size
        session.previews = {"still": still, "turn": turn}
        session.live = None  # rebuilt for the new avatar by the next live frame
    shown = size or avatar.output_size
    job.result = {"shots": int(avatar.shots), "steps": int(steps), "size": int(shown),
                  "network_size": int(avatar.size), "download": "/api/avatar.avatar", "bytes": path.stat().st_size,
                  "still": f"/api/avatar/still.jpg?v={version}", "turn": f"/api/avatar/turn.webp?v={version}"}


def preview_files(folder: Path, avatar, size: int | None, version: int) -> tuple[Path, Path]:
    """The avatar in its own pose (a JPEG) and turning its head left and right (an animated WebP)."""
    from PIL import Image

    reference = avatar.reference_landmarks
    still = render_poses(avatar, reference[None], size)[0]
    turn = render_poses(avatar, np.stack([apply_expression(reference, Expression(yaw=float(y)))
                                          for y in TURN_YAWS]), size, consecutive=True)
    still_path, turn_path = folder / f"still-{version}.jpg", folder / f"turn-{version}.webp"
    still_path.write_bytes(encode_jpeg(still, 92))
    images = [Image.fromarray(f) for f in turn]
    images[0].save(turn_path, save_all=True, append_images=images[1:], duration=TURN_FRAME_MS, loop=0, quality=85)
    return still_path, turn_path


def render_video(session: Session, job: Job, video: Path, side_by_side: bool, paste_back: bool) -> None:
    """Driving video → mp4 with the driver's audio, in the session's folder; what the tracker
    and decoder noticed (damaged frames, a lost face) becomes the job's notes."""
    from talkinghead.infer.driving import animate_to_video, track_from_video

    avatar = session.avatar
    if avatar is None:
        raise TalkingHeadError("build an avatar first (Avatar tab)")
    track = track_from_video(video, progress=False, on_progress=job.report)
    job.notes = [session.user_message(n) for n in track.notes]
    out = session.folder / f"video-{job.id}.mp4"
    with session.lock:
        size = session.output_size
    summary = animate_to_video(avatar, track, out, side_by_side=side_by_side, paste=paste_back, progress=False,
                               on_progress=job.report, size=render_size(avatar, size))
    job.result = {"frames": summary["frames"], "fps": summary["fps"], "lost": summary["lost"],
                  "size": summary["size"], "download": f"/api/result/{job.id}.mp4", "bytes": out.stat().st_size}


# -- quick renders ----------------------------------------------------------------------------

def expression_still(session: Session, expression: Expression) -> bytes:
    """The session's avatar in its own pose with ``expression`` applied, as a JPEG."""
    with session.lock:
        avatar, size = session.avatar, session.output_size
    if avatar is None:
        raise TalkingHeadError("build an avatar first (Avatar tab)")
    marks = apply_expression(avatar.reference_landmarks, expression)
    return encode_jpeg(render_poses(avatar, marks[None], size)[0])


def live_state(session: Session) -> LiveState:
    """The session's live driver and renderer for its current avatar (made on first use)."""
    from talkinghead.data.landmarks import get_detector
    from talkinghead.infer.live import LiveDriver

    with session.lock:
        avatar, version, live, size = session.avatar, session.avatar_version, session.live, session.output_size
    if avatar is None:
        raise TalkingHeadError("build an avatar first (Avatar tab)")
    if live is not None and live.version == version:
        return live
    fresh = LiveState(LiveDriver(avatar.reference_landmarks, get_detector("dlib")),
                      live_renderer(avatar, render_size(avatar, size)), version)
    with session.lock:
        if session.avatar_version == version:
            session.live = fresh
    return fresh


def live_renderer(avatar, size: int | None = None):
    """onnxruntime when installed (about 2.5× PyTorch's frames/s on one CPU thread), else PyTorch;
    rendering at ``size`` (default the avatar's output size)."""
    from talkinghead.infer.live import OnnxAvatarRenderer, TorchRenderer

    import torch

    try:
        # no_grad: the avatar's renderer may hold inference-mode tensors (made by an earlier
        # render), which the exporter's trace may use but not record for autograd.
        with torch.no_grad():
            return OnnxAvatarRenderer(avatar, size=size)
    except TalkingHeadError:  # the [app] extra is not installed
        return TorchRenderer(avatar, size=size)


def live_track(state: LiveState, data: bytes, max_pixels: float) -> tuple[np.ndarray, str]:
    """A live frame's bytes → ((68, 2) landmarks for the avatar, face state "ok"/"lost"/"none")."""
    return state.driver(decode_frame(data, max_pixels), time.perf_counter())


def live_render(state: LiveState, landmarks: np.ndarray, size: int | None,
                expression: Expression | None = None) -> bytes:
    """(68, 2) landmarks → the avatar's picture as a JPEG (at ``size`` when given)."""
    if expression is not None and not expression.is_identity:
        landmarks = apply_expression(landmarks, expression)
    picture = state.renderer(landmarks)
    if size is not None and size != picture.shape[0]:
        picture = cv2.resize(picture, (size, size), interpolation=cv2.INTER_CUBIC)
    return encode_jpeg(picture)
