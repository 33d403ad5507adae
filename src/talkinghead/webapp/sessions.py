"""Per-browser state of the web app: each session has its own folder, uploads, avatar, jobs
and live driver; nothing is shared between sessions but the read-only meta checkpoint."""

from __future__ import annotations

import logging
import re
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from talkinghead.errors import TalkingHeadError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
VIDEO_EXTENSIONS = {".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v"}


class Cancelled(Exception):
    """A job's session was closed (or the server is stopping)."""


@dataclass
class Job:
    """A long task (avatar building, video rendering) run in its own thread."""

    id: str
    kind: str  # "avatar" or "video"
    state: str = "waiting"  # waiting, running, done, error
    stage: str = "waiting for another job to finish"
    done: int = 0
    total: int | None = None
    error: str = ""
    notes: list[str] = field(default_factory=list)
    result: dict = field(default_factory=dict)
    cancelled: bool = False

    def report(self, stage: str, done: int, total: int | None) -> None:
        if self.cancelled:
            raise Cancelled()
        self.stage, self.done, self.total = stage, done, total

    def as_dict(self) -> dict:
        fraction = (self.done / self.total) if self.total else None
        return {"id": self.id, "kind": self.kind, "state": self.state, "stage": self.stage, "done": self.done,
                "total": self.total, "fraction": fraction, "error": self.error, "notes": self.notes,
                "result": self.result}


def safe_name(name: str) -> str:
    """A file name without folders or odd characters (for files kept in a session folder)."""
    base = Path(name.replace("\\", "/")).name
    base = re.sub(r"[^A-Za-z0-9._ -]", "_", base).strip(" .") or "upload"
    return base[:100]


class Session:
    def __init__(self, root: Path):
        self.id = secrets.token_urlsafe(18)
        self.folder = Path(tempfile.mkdtemp(prefix="session-", dir=root))
        self.uploads: dict[str, Path] = {}  # upload id → file
        self.jobs: dict[str, Job] = {}
        self.avatar = None
        self.avatar_file: Path | None = None
        self.avatar_version = 0
        self.live = None  # (LiveDriver, renderer) for the current avatar
        self.live_lock = threading.Lock()
        self.lock = threading.Lock()
        self.last_seen = time.time()

    def add_upload(self, name: str, data: bytes, kinds: set[str]) -> tuple[str, Path]:
        """Store an uploaded file; its extension must be one of ``kinds``."""
        clean = safe_name(name)
        if Path(clean).suffix.lower() not in kinds:
            allowed = ", ".join(sorted(e.lstrip(".") for e in kinds))
            raise TalkingHeadError(f"{clean}: not a supported file type (use {allowed})")
        upload_id = secrets.token_hex(6)
        folder = self.folder / "uploads" / upload_id
        folder.mkdir(parents=True)
        path = folder / clean
        path.write_bytes(data)
        self.uploads[upload_id] = path
        return upload_id, path

    def user_message(self, text: str) -> str:
        """An error message with this session's folders removed (the user knows file names)."""
        return re.sub(re.escape(str(self.folder)) + r"/uploads/[0-9a-f]+/", "", text)

    def close(self) -> None:
        for job in self.jobs.values():
            job.cancelled = True
        shutil.rmtree(self.folder, ignore_errors=True)


class SessionStore:
    """Sessions by cookie; idle ones are closed after ``idle_s``; at most ``limit`` at once."""

    def __init__(self, root: Path, limit: int = 16, idle_s: float = 3600.0):
        self.root = Path(root)
        self.limit, self.idle_s = limit, idle_s
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def get(self, session_id: str | None) -> Session | None:
        with self._lock:
            self._expire()
            session = self._sessions.get(session_id or "")
            if session is not None:
                session.last_seen = time.time()
            return session

    def create(self) -> Session:
        with self._lock:
            self._expire()
            if len(self._sessions) >= self.limit:
                raise TalkingHeadError(f"the server already has {self.limit} users; try again later")
            session = Session(self.root)
            self._sessions[session.id] = session
            return session

    def _expire(self) -> None:
        now = time.time()
        for key, session in list(self._sessions.items()):
            busy = any(j.state in ("waiting", "running") for j in session.jobs.values())
            if now - session.last_seen > self.idle_s and not busy:
                session.close()
                del self._sessions[key]

    def close_all(self) -> None:
        with self._lock:
            for session in self._sessions.values():
                session.close()
            self._sessions.clear()


# -- the work ---------------------------------------------------------------------------------

def build_avatar(session: Session, job: Job, paths: list[Path], checkpoint, steps: int) -> None:
    """Photos → avatar (FF with ``steps=0``, else FT), saved in the session's folder."""
    from talkinghead.infer.avatar import Avatar
    from talkinghead.infer.faces import crops_from_sources

    job.report("detecting faces", 0, len(paths))
    faces = crops_from_sources([str(p) for p in paths], checkpoint.config.model.image_size, progress=True)
    job.notes = [session.user_message(n) for n in faces.notes]
    job.report("fine-tuning" if steps else "embedding", 0, steps or None)
    avatar = Avatar.from_crops(faces.crops, faces.landmarks, checkpoint, finetune_steps=steps, device="cpu",
                               progress=True)
    avatar.source_image, avatar.source_box = faces.source_image, faces.source_box
    job.report("saving", 0, None)
    with session.lock:
        session.avatar_version += 1
        path = avatar.save(session.folder / f"avatar-{session.avatar_version}.avatar")
        session.avatar, session.avatar_file = avatar, path
        session.live = None
    job.result = {"shots": int(avatar.shots), "steps": int(steps), "size": int(avatar.size),
                  "download": "/api/avatar.avatar", "bytes": path.stat().st_size}


def render_video(session: Session, job: Job, video: Path, side_by_side: bool, paste_back: bool) -> None:
    """Driving video → mp4 with the driver's audio, in the session's folder."""
    from talkinghead.infer.driving import animate_to_video, track_from_video

    avatar = session.avatar
    if avatar is None:
        raise TalkingHeadError("build an avatar first (Avatar tab)")
    job.report("landmarks", 0, None)
    track = track_from_video(video, progress=True)
    out = session.folder / f"video-{job.id}.mp4"
    summary = animate_to_video(avatar, track, out, side_by_side=side_by_side, paste=paste_back, progress=True)
    job.result = {"frames": summary["frames"], "fps": summary["fps"], "lost": summary["lost"],
                  "download": f"/api/result/{job.id}.mp4", "bytes": out.stat().st_size}
    if summary["lost"]:
        job.notes.append(f"face lost in {summary['lost']} driving frames: held the last good pose")


def live_frame(session: Session, image: np.ndarray, side_by_side: bool = False) -> tuple[np.ndarray, str]:
    """One webcam frame (H, W, 3) RGB → (the avatar's rendering (S, S, 3) RGB, face state)."""
    from talkinghead.data.landmarks import get_detector
    from talkinghead.infer.live import LiveDriver

    with session.lock:
        avatar = session.avatar
        if avatar is None:
            raise TalkingHeadError("build an avatar first (Avatar tab)")
        if session.live is None:
            session.live = (LiveDriver(avatar.reference_landmarks, get_detector("dlib")), live_renderer(avatar))
        driver, renderer = session.live
    landmarks, face = driver(image, time.perf_counter())
    return renderer(landmarks), face


def live_renderer(avatar):
    """onnxruntime when installed (about 2.5× PyTorch's frames/s on one CPU thread), else PyTorch."""
    from talkinghead.infer.live import OnnxAvatarRenderer, TorchRenderer

    try:
        return OnnxAvatarRenderer(avatar)
    except TalkingHeadError:  # the [app] extra is not installed
        return TorchRenderer(avatar)
