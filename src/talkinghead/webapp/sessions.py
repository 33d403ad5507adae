"""Per-browser state of the web app and the queue of long jobs.

Each session has its own folder, uploads (within a quota), avatar, jobs and live state; nothing
is shared between sessions but the read-only meta checkpoint. Sessions are made only when the
page asks (``POST /api/session``); an empty one is forgotten after a couple of minutes without
the page's heartbeat, one with uploads or an avatar after an hour idle. Long jobs (avatar
building, video rendering) wait in one :class:`JobQueue`, at most a few per session, and run
``slots`` at a time, taking the next job from the session that waited longest.
"""

from __future__ import annotations

import logging
import re
import secrets
import shutil
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from talkinghead.errors import TalkingHeadError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
VIDEO_EXTENSIONS = {".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v"}
#: Longest stored file name (the extension is always kept).
MAX_NAME = 100


class Cancelled(Exception):
    """The job was cancelled (by its user, its session's end, or the server stopping)."""


class SessionsFull(TalkingHeadError):
    """Every session slot is taken (HTTP 503)."""


class QuotaExceeded(TalkingHeadError):
    """A session's uploads would exceed its quota (HTTP 413)."""


class TooManyJobs(TalkingHeadError):
    """A session already has its most jobs waiting or running (HTTP 429)."""


@dataclass(eq=False)  # a job is itself: compared and hashed by identity
class Job:
    """A long task (avatar building, video rendering) run by the :class:`JobQueue`."""

    id: str
    kind: str  # "avatar" or "video"
    session: "Session"
    work: Callable[["Job"], None]
    state: str = "waiting"  # waiting, running, done, error, cancelled
    stage: str = "waiting for other jobs to finish"
    done: int = 0
    total: int | None = None
    error: str = ""
    notes: list[str] = field(default_factory=list)
    result: dict = field(default_factory=dict)
    cancel_requested: bool = False
    submitted: float = field(default_factory=time.monotonic)

    @property
    def active(self) -> bool:
        return self.state in ("waiting", "running")

    def report(self, stage: str, done: int, total: int | None) -> None:
        """The pipeline's progress callback (:mod:`talkinghead.progress`); raises to cancel."""
        if self.cancel_requested:
            raise Cancelled()
        self.stage, self.done, self.total = stage, done, total

    def as_dict(self) -> dict:
        fraction = (self.done / self.total) if self.total else None
        return {"id": self.id, "kind": self.kind, "state": self.state, "stage": self.stage, "done": self.done,
                "total": self.total, "fraction": fraction, "error": self.error, "notes": self.notes,
                "result": self.result}


def safe_name(name: str) -> str:
    """A file name without folders or odd characters, at most MAX_NAME characters, keeping its
    extension (a long name loses the end of its stem, not its type)."""
    base = Path(name.replace("\\", "/")).name
    base = re.sub(r"[^A-Za-z0-9._ -]", "_", base).strip(" .") or "upload"
    stem, suffix = (base.rsplit(".", 1)[0], "." + base.rsplit(".", 1)[1]) if "." in base else (base, "")
    suffix = suffix[:16]
    return (stem[: MAX_NAME - len(suffix)].rstrip(" .") or "upload") + suffix


@dataclass
class LiveState:
    """A session's live driving: the driver's tracking state and the renderer of avatar
    number ``version`` (a new avatar gets a new one)."""

    driver: object  # infer.live.LiveDriver
    renderer: Callable  # (68, 2) landmarks → (S, S, 3) uint8
    version: int


@dataclass
class Upload:
    path: Path
    size: int


class Session:
    def __init__(self, root: Path, quota_bytes: int, max_jobs: int):
        self.id = secrets.token_urlsafe(18)
        self.folder = Path(tempfile.mkdtemp(prefix="session-", dir=root))
        self.quota_bytes, self.max_jobs = quota_bytes, max_jobs
        self.uploads: dict[str, Upload] = {}
        self.jobs: dict[str, Job] = {}
        self.avatar = None
        self.avatar_file: Path | None = None
        self.avatar_version = 0
        self.output_size: int | None = None  # the size asked for with the avatar (None: the avatar's)
        self.previews: dict[str, Path] = {}  # "still", "turn" → files of the current avatar
        self.live: LiveState | None = None
        self.live_connection = None  # the open live socket (webapp.server.LiveConnection), one at most
        self.lock = threading.Lock()
        self.render_lock = threading.Lock()  # one preview/expression render at a time
        self.last_seen = time.monotonic()

    @property
    def used_bytes(self) -> int:
        return sum(u.size for u in self.uploads.values())

    @property
    def empty(self) -> bool:
        return not self.uploads and self.avatar is None and not self.jobs

    @property
    def busy(self) -> bool:
        return any(job.active for job in self.jobs.values()) or self.live_connection is not None

    def check_quota(self, more: int) -> None:
        if self.used_bytes + more > self.quota_bytes:
            raise QuotaExceeded(f"your uploads would take {(self.used_bytes + more) / 2**20:.1f} MB of this "
                                f"session's {self.quota_bytes / 2**20:g} MB; reload the page to start afresh")

    def new_upload_path(self, name: str, kinds: set[str]) -> tuple[str, Path]:
        """A fresh file path for an upload called ``name``, whose extension must be one of ``kinds``."""
        clean = safe_name(name)
        if Path(clean).suffix.lower() not in kinds:
            allowed = ", ".join(sorted(e.lstrip(".") for e in kinds))
            raise TalkingHeadError(f"{clean}: not a supported file type (use {allowed})")
        upload_id = secrets.token_hex(6)
        folder = self.folder / "uploads" / upload_id
        folder.mkdir(parents=True)
        return upload_id, folder / clean

    def keep_upload(self, upload_id: str, path: Path) -> None:
        self.uploads[upload_id] = Upload(path, path.stat().st_size)

    @staticmethod
    def discard(path: Path) -> None:
        """Remove a rejected upload and its folder."""
        shutil.rmtree(path.parent, ignore_errors=True)

    def user_message(self, text: str) -> str:
        """An error message with this session's folders removed (the user knows file names)."""
        return re.sub(re.escape(str(self.folder)) + r"/uploads/[0-9a-f]+/", "", text)

    def close(self) -> None:
        for job in self.jobs.values():
            job.cancel_requested = True
        shutil.rmtree(self.folder, ignore_errors=True)


class SessionStore:
    """Sessions by cookie; at most ``limit`` at once. An empty session is closed after
    ``empty_idle_s`` without a request, any other after ``idle_s`` (never while it has a job
    waiting or running, or a live socket open)."""

    def __init__(self, root: Path, limit: int = 16, idle_s: float = 3600.0, empty_idle_s: float = 120.0,
                 quota_bytes: int = 300 * 2**20, max_jobs: int = 2):
        self.root = Path(root)
        self.limit, self.idle_s, self.empty_idle_s = limit, idle_s, empty_idle_s
        self.quota_bytes, self.max_jobs = quota_bytes, max_jobs
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self):
        with self._lock:
            return iter(list(self._sessions.values()))

    def get(self, session_id: str | None) -> Session | None:
        with self._lock:
            self._expire()
            session = self._sessions.get(session_id or "")
            if session is not None:
                session.last_seen = time.monotonic()
            return session

    def create(self) -> Session:
        with self._lock:
            self._expire()
            if len(self._sessions) >= self.limit:
                raise SessionsFull(f"the server already has {self.limit} users; try again in a few minutes")
            session = Session(self.root, self.quota_bytes, self.max_jobs)
            self._sessions[session.id] = session
            return session

    def _expire(self) -> None:
        now = time.monotonic()
        for key, session in list(self._sessions.items()):
            limit = self.empty_idle_s if session.empty else self.idle_s
            if now - session.last_seen > limit and not session.busy:
                session.close()
                del self._sessions[key]

    def close_all(self) -> None:
        with self._lock:
            for session in self._sessions.values():
                session.close()
            self._sessions.clear()


class JobQueue:
    """Long jobs, ``slots`` at a time in worker threads; each session has at most
    ``session.max_jobs`` waiting or running. The next job is the oldest of the session whose
    last job started longest ago, so one user's queue cannot hold the others back for long."""

    def __init__(self, slots: int = 1):
        self._waiting: list[Job] = []
        self._running: set[Job] = set()
        self._cond = threading.Condition()
        self._last_start: dict[str, float] = {}  # session id → when its last job started
        self._stopping = False
        self._workers = [threading.Thread(target=self._work, name=f"job-worker-{i}", daemon=True)
                         for i in range(max(1, slots))]
        for worker in self._workers:
            worker.start()

    def submit(self, session: Session, kind: str, work: Callable[[Job], None]) -> Job:
        with self._cond:
            active = sum(job.active for job in session.jobs.values())
            if active >= session.max_jobs:
                raise TooManyJobs(f"you already have {active} jobs waiting or running (at most "
                                  f"{session.max_jobs}); wait for them or cancel one")
            job = Job(secrets.token_hex(6), kind, session, work)
            session.jobs[job.id] = job
            self._waiting.append(job)
            self._cond.notify()
            return job

    def cancel(self, job: Job) -> None:
        with self._cond:
            job.cancel_requested = True
            if job in self._waiting:
                self._waiting.remove(job)
                job.state, job.stage, job.error = "cancelled", "cancelled", "cancelled"

    def _next(self) -> Job | None:
        with self._cond:
            while not self._waiting and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
            job = min(self._waiting, key=lambda j: (self._last_start.get(j.session.id, 0.0), j.submitted))
            self._waiting.remove(job)
            self._running.add(job)
            self._last_start[job.session.id] = time.monotonic()
            job.state, job.stage = "running", "starting"
            return job

    def _work(self) -> None:
        while (job := self._next()) is not None:
            session = job.session
            try:
                if job.cancel_requested:
                    raise Cancelled()
                job.work(job)
                job.state, job.stage = "done", "done"
            except Cancelled:
                job.state, job.stage, job.error = "cancelled", "cancelled", "cancelled"
            except TalkingHeadError as exc:
                job.state, job.error = "error", session.user_message(str(exc))
            except Exception as exc:  # a bug: keep serving, tell the user, log the details
                log.error("job %s failed:\n%s", job.id, traceback.format_exc())
                job.state, job.error = "error", f"internal error ({type(exc).__name__}); see the server's log"
            finally:
                with self._cond:
                    self._running.discard(job)

    def shutdown(self, timeout: float = 20.0) -> bool:
        """Cancel every job and wait for the workers; False if one is still running after ``timeout``."""
        with self._cond:
            self._stopping = True
            for job in self._waiting:
                job.cancel_requested = True
                job.state, job.error = "cancelled", "cancelled"
            self._waiting.clear()
            for job in self._running:  # stops at its next progress step
                job.cancel_requested = True
            self._cond.notify_all()
        end = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(0.0, end - time.monotonic()))
        return not any(w.is_alive() for w in self._workers)
