"""The web app's HTTP server: a page (static/index.html) and a small JSON API.

    GET  /api/limits                                            → upload limits
    POST /api/upload?kind=photo|video&name=F   raw file body  → {"upload": id}
    POST /api/avatar     {"uploads": [...], "steps": N}        → {"job": id}
    POST /api/video      {"upload": id, "side_by_side": b, "paste_back": b} → {"job": id}
    GET  /api/job/ID                                            → state, stage, progress, notes, error
    GET  /api/avatar.avatar                                     → the session's avatar file
    GET  /api/result/ID.mp4                                     → a rendered video
    POST /api/live/frame  JPEG body                             → JPEG (header X-Face: ok/lost/none)
    POST /api/live/reset                                        → next frame is the neutral face

Every browser gets its own session (cookie); errors come back as ``{"error": "one line"}``
with a 4xx status and the server keeps running. Long jobs run one at a time (``job_slots``).
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import traceback
from dataclasses import dataclass
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import cv2
import numpy as np

from talkinghead.errors import TalkingHeadError
from talkinghead.webapp import progress
from talkinghead.webapp.sessions import (IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, Cancelled, Job, Session, SessionStore,
                                         build_avatar, live_frame, render_video)

log = logging.getLogger(__name__)

COOKIE = "talkinghead_session"


@dataclass
class AppLimits:
    max_photo_mb: float = 20.0
    max_video_mb: float = 100.0
    max_photos: int = 8
    max_steps: int = 400
    max_sessions: int = 16
    job_slots: int = 1


class ClientError(Exception):
    """An HTTP error status with a one-line message for the UI."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class App:
    """Everything the handler needs: the model, the sessions, the limits, the job slots."""

    def __init__(self, checkpoint_path, workdir: Path, limits: AppLimits | None = None):
        from talkinghead.checkpoint import load_checkpoint

        self.checkpoint = load_checkpoint(checkpoint_path)
        self.limits = limits or AppLimits()
        self.sessions = SessionStore(workdir, limit=self.limits.max_sessions)
        self.job_slots = threading.Semaphore(self.limits.job_slots)
        self.page = resources.files("talkinghead.webapp").joinpath("static/index.html").read_bytes()
        progress.install()

    def start_job(self, session: Session, kind: str, work) -> Job:
        job = Job(secrets.token_hex(6), kind)
        session.jobs[job.id] = job

        def run():
            with self.job_slots:
                if job.cancelled:
                    return
                job.state, job.stage = "running", "starting"
                try:
                    with progress.report_to(job.report):
                        work(job)
                    job.state, job.stage = "done", "done"
                except Cancelled:
                    job.state, job.error = "error", "cancelled"
                except TalkingHeadError as exc:
                    job.state, job.error = "error", session.user_message(str(exc))
                except Exception as exc:  # a bug: keep serving, tell the user, log the details
                    log.error("job %s failed:\n%s", job.id, traceback.format_exc())
                    job.state, job.error = "error", f"internal error ({type(exc).__name__}); see the server's log"

        threading.Thread(target=run, name=f"job-{job.id}", daemon=True).start()
        return job


def make_handler(app: App):
    class Handler(BaseHTTPRequestHandler):
        server_version = "talkinghead"

        def log_message(self, fmt, *args):
            log.debug("%s " + fmt, self.address_string(), *args)

        # -- plumbing ----------------------------------------------------------------------
        def _session(self, create: bool = True) -> Session | None:
            cookie = SimpleCookie(self.headers.get("Cookie", ""))
            session = app.sessions.get(cookie[COOKIE].value if COOKIE in cookie else None)
            if session is None and create:
                session = app.sessions.create()
                self._new_cookie = session.id
            return session

        def _send(self, status: int, body: bytes, ctype: str, headers: dict | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            if getattr(self, "_new_cookie", None):
                self.send_header("Set-Cookie", f"{COOKIE}={self._new_cookie}; Path=/; HttpOnly; SameSite=Strict")
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, data: dict) -> None:
            self._send(status, json.dumps(data).encode(), "application/json")

        def _file(self, path: Path, ctype: str, name: str) -> None:
            self._send(200, path.read_bytes(), ctype, {"Content-Disposition": f'attachment; filename="{name}"'})

        def _body(self, limit_mb: float) -> bytes:
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                raise ClientError(411, "the upload has no length") from None
            if length > limit_mb * 2**20:
                # Read and discard it (up to 1 GB): a client still sending gets no answer
                # (a broken pipe) if the server replies before the body is consumed.
                self.close_connection = True
                left = length if length <= 2**30 else 0
                while left > 0:
                    chunk = self.rfile.read(min(left, 2**20))
                    if not chunk:
                        break
                    left -= len(chunk)
                raise ClientError(413, f"upload too large: {length / 2**20:.1f} MB (limit {limit_mb:g} MB)")
            return self.rfile.read(length)

        def _json_body(self) -> dict:
            try:
                data = json.loads(self._body(1) or b"{}")
            except json.JSONDecodeError:
                raise ClientError(400, "request body is not JSON") from None
            if not isinstance(data, dict):
                raise ClientError(400, "request body must be a JSON object")
            return data

        def _route(self, method: str) -> None:
            self._new_cookie = None
            url = urlparse(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            try:
                handler = ROUTES.get((method, url.path))
                if handler is None:
                    for (m, prefix), fn in PREFIX_ROUTES.items():
                        if m == method and url.path.startswith(prefix):
                            handler = fn
                            break
                if handler is None:
                    raise ClientError(404, f"no such page: {url.path}")
                handler(self, url.path, query)
            except ClientError as exc:
                self._json(exc.status, {"error": str(exc)})
            except TalkingHeadError as exc:
                session = self._session(create=False)
                message = session.user_message(str(exc)) if session else str(exc)
                self._json(422 if "face" in message else 400, {"error": message})
            except (BrokenPipeError, ConnectionResetError):
                pass
            except Exception as exc:  # a bug: keep serving
                log.error("%s %s failed:\n%s", method, url.path, traceback.format_exc())
                self._json(500, {"error": f"internal error ({type(exc).__name__}); see the server's log"})

        def do_GET(self):
            self._route("GET")

        def do_POST(self):
            self._route("POST")

        # -- pages and API -----------------------------------------------------------------
        def index(self, path, query):
            self._session()
            self._send(200, app.page, "text/html; charset=utf-8")

        def limits(self, path, query):
            self._json(200, {"max_photo_mb": app.limits.max_photo_mb, "max_video_mb": app.limits.max_video_mb,
                             "max_photos": app.limits.max_photos, "max_steps": app.limits.max_steps})

        def upload(self, path, query):
            session = self._session()
            kind = query.get("kind", "photo")
            if kind not in ("photo", "video"):
                raise ClientError(400, f"kind={kind}: use photo or video")
            name = query.get("name") or "upload"
            photo = kind == "photo"
            data = self._body(app.limits.max_photo_mb if photo else app.limits.max_video_mb)
            if not data:
                raise ClientError(400, f"{name}: empty file")
            upload_id, stored = session.add_upload(name, data, IMAGE_EXTENSIONS if photo else VIDEO_EXTENSIONS)
            if photo:  # a wrong file type says so now, not after a queue wait
                from talkinghead.data.video import read_image

                read_image(stored)
            self._json(200, {"upload": upload_id, "name": stored.name})

        def _uploads(self, session: Session, ids) -> list[Path]:
            if not isinstance(ids, list) or not ids:
                raise ClientError(400, "choose at least one file first")
            try:
                return [session.uploads[i] for i in ids]
            except (KeyError, TypeError):
                raise ClientError(400, "unknown upload (it belongs to another session, or the session expired)") from None

        def avatar(self, path, query):
            session = self._session()
            data = self._json_body()
            paths = self._uploads(session, data.get("uploads"))
            if len(paths) > app.limits.max_photos:
                raise ClientError(400, f"{len(paths)} photos: at most {app.limits.max_photos}")
            try:
                steps = int(data.get("steps", 0))
            except (TypeError, ValueError):
                raise ClientError(400, "steps must be a whole number") from None
            if not 0 <= steps <= app.limits.max_steps:
                raise ClientError(400, f"steps={steps}: use 0 (feed-forward) to {app.limits.max_steps}")
            job = app.start_job(session, "avatar", lambda j: build_avatar(session, j, paths, app.checkpoint, steps))
            self._json(200, {"job": job.id})

        def video(self, path, query):
            session = self._session()
            data = self._json_body()
            (video,) = self._uploads(session, [data.get("upload")] if data.get("upload") else None)
            if session.avatar is None:
                raise ClientError(409, "build an avatar first (Avatar tab)")
            side, paste = bool(data.get("side_by_side")), bool(data.get("paste_back"))
            job = app.start_job(session, "video", lambda j: render_video(session, j, video, side, paste))
            self._json(200, {"job": job.id})

        def job(self, path, query):
            session = self._session()
            job = session.jobs.get(path.rsplit("/", 1)[-1])
            if job is None:
                raise ClientError(404, "no such job in this session")
            self._json(200, job.as_dict())

        def download_avatar(self, path, query):
            session = self._session()
            if session.avatar_file is None:
                raise ClientError(404, "this session has no avatar yet")
            self._file(session.avatar_file, "application/octet-stream", "talkinghead.avatar")

        def download_result(self, path, query):
            session = self._session()
            job = session.jobs.get(path.rsplit("/", 1)[-1].removesuffix(".mp4"))
            if job is None or job.kind != "video" or job.state != "done":
                raise ClientError(404, "no such video in this session")
            self._file(session.folder / f"video-{job.id}.mp4", "video/mp4", "talkinghead.mp4")

        def live(self, path, query):
            session = self._session()
            body = self._body(app.limits.max_photo_mb)
            if session.avatar is None:
                raise ClientError(409, "build an avatar first (Avatar tab)")
            image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
            if image is None:
                raise ClientError(400, "live frame: not a JPEG/PNG image")
            if not session.live_lock.acquire(blocking=False):
                raise ClientError(429, "a frame of this session is being rendered; this one was dropped")
            try:
                rendered, face = live_frame(session, cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
            finally:
                session.live_lock.release()
            ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rendered, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
            self._send(200, jpeg.tobytes(), "image/jpeg", {"X-Face": face})

        def live_reset(self, path, query):
            session = self._session()
            if session.live is not None:
                session.live[0].reset_reference()
            self._json(200, {"ok": True})

    ROUTES = {
        ("GET", "/"): Handler.index,
        ("GET", "/api/limits"): Handler.limits,
        ("POST", "/api/upload"): Handler.upload,
        ("POST", "/api/avatar"): Handler.avatar,
        ("POST", "/api/video"): Handler.video,
        ("GET", "/api/avatar.avatar"): Handler.download_avatar,
        ("POST", "/api/live/frame"): Handler.live,
        ("POST", "/api/live/reset"): Handler.live_reset,
    }
    PREFIX_ROUTES = {
        ("GET", "/api/job/"): Handler.job,
        ("GET", "/api/result/"): Handler.download_result,
    }
    return Handler


def make_server(app: App, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    try:
        server = ThreadingHTTPServer((host, port), make_handler(app))
    except OSError as exc:
        raise TalkingHeadError(f"{host}:{port}: cannot listen there ({exc.strerror or exc})") from None
    server.daemon_threads = True
    return server
