"""The web app's server: a page (static/index.html), a JSON API and a live WebSocket, on
Starlette and uvicorn (HTTP/1.1 through h11, WebSockets through wsproto).

    POST /api/session                               → makes this browser's session (cookie) or keeps it alive;
                                                      {"limits": {...}, "avatar": {...} | null}
    POST /api/login      {"token": T}               → the auth cookie (servers not on loopback)
    GET  /api/limits                                → upload limits
    POST /api/upload?kind=photo|video  multipart "file" → {"upload": id, "name": stored name}
    POST /api/avatar     {"uploads": [...], "steps": N, "size": S | null}        → {"job": id}
    POST /api/video      {"upload": id, "side_by_side": b, "paste_back": b}     → {"job": id}
    GET  /api/job/ID                                → state, stage, progress, notes, error, result
    POST /api/job/ID/cancel                         → the job, cancelled
    GET  /api/avatar.avatar                         → the session's avatar file
    GET  /api/avatar/still.jpg, /api/avatar/turn.webp → the avatar, still and turning its head
    POST /api/expression {"eyes", "mouth", "smile", "yaw", "pitch", "roll"} → JPEG of the avatar
    GET  /api/result/ID.mp4                         → a rendered video
    WS   /api/live                                  → live driving (below)
    POST /api/live/reset                            → the next live frame is the neutral face

Live: the browser sends binary messages, a 4-byte big-endian frame number then a JPEG; the
server answers each frame it renders with a text message ``{"frame": n, "face":
"ok"|"lost"|"none", "dropped": total}`` followed by a binary JPEG. Tracking and rendering run
as two stages; a frame arriving while the previous one waits is dropped, not queued (counted
in ``dropped``), so the picture stays close to real time. Text messages ``{"reset": true}``
and ``{"expression": {...}}`` reset the neutral face and set expression controls.

Errors come back as ``{"error": "one line"}`` with a status chosen by the exception's class
(:data:`ERROR_STATUS`), and the server keeps running. What is refused before a route runs
(a foreign Host or Origin, a missing token, a body without length or too large, slow
clients) is in :mod:`talkinghead.webapp.guard`.

Changes from the standard-library server this replaces, for safety: sessions are made only by
``POST /api/session`` (the page calls it), never by a request without a cookie; uploads are
multipart forms (``file`` field) instead of raw bodies; live frames travel over the WebSocket
instead of ``POST /api/live/frame``; jobs can be cancelled and end in state ``cancelled``;
the avatar job takes an output ``size``; its result names a still and a turn to show.
"""

from __future__ import annotations

import asyncio
import logging
import hmac
import socket
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from talkinghead.errors import NoFaceError, TalkingHeadError
from talkinghead.webapp import work
from talkinghead.webapp.inputs import ClientError, bool_field, expression_from, int_field, parse_json
from talkinghead.webapp.live import LiveConnection
from talkinghead.webapp.guard import AUTH_COOKIE, GuardConfig, GuardedH11Protocol, RequestGuard, cookie_value
from talkinghead.webapp.sessions import (IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, JobQueue, QuotaExceeded, Session,
                                         SessionsFull, SessionStore, TooManyJobs)

log = logging.getLogger(__name__)

COOKIE = "talkinghead_session"
#: HTTP status of each error class (the first that matches).
ERROR_STATUS = ((NoFaceError, 422), (SessionsFull, 503), (QuotaExceeded, 413), (TooManyJobs, 429),
                (TalkingHeadError, 400))
#: Multipart overhead allowed on top of an upload's own size.
FORM_OVERHEAD = 64 * 1024


@dataclass
class AppLimits:
    max_photo_mb: float = 20.0
    max_video_mb: float = 100.0
    max_photo_megapixels: float = 40.0
    max_live_megapixels: float = 4.0
    max_photos: int = 8
    max_steps: int = 400
    max_sessions: int = 16
    max_jobs_per_session: int = 2
    session_quota_mb: float = 300.0
    job_slots: int = 1
    live_workers: int = 2

    def public(self) -> dict:
        return {"max_photo_mb": self.max_photo_mb, "max_video_mb": self.max_video_mb,
                "max_photo_megapixels": self.max_photo_megapixels, "max_photos": self.max_photos,
                "max_steps": self.max_steps, "session_quota_mb": self.session_quota_mb,
                "output_sizes": list(work.OUTPUT_SIZES)}


def status_for(exc: TalkingHeadError) -> int:
    return next(status for cls, status in ERROR_STATUS if isinstance(exc, cls))


class AppState:
    """The model, the sessions, the job queue and the limits, for one server."""

    def __init__(self, checkpoint_path, workdir: Path, limits: AppLimits | None = None):
        from talkinghead.checkpoint import load_checkpoint

        self.checkpoint = load_checkpoint(checkpoint_path)
        self.limits = limits or AppLimits()
        self.sessions = SessionStore(workdir, limit=self.limits.max_sessions,
                                     quota_bytes=int(self.limits.session_quota_mb * 2**20),
                                     max_jobs=self.limits.max_jobs_per_session)
        self.jobs = JobQueue(self.limits.job_slots)
        self.live_limiter = anyio.CapacityLimiter(max(1, self.limits.live_workers))
        self.stopped_cleanly = True

    def close(self) -> None:
        self.stopped_cleanly = self.jobs.shutdown(timeout=20)
        if not self.stopped_cleanly:
            log.warning("a job did not stop within 20 s")
        self.sessions.close_all()

    def body_limits(self) -> dict[str, int]:
        upload = int(max(self.limits.max_photo_mb, self.limits.max_video_mb) * 2**20) + FORM_OVERHEAD
        return {"/api/upload": upload}


def session_cookie(response: Response, session: Session) -> None:
    response.set_cookie(COOKIE, session.id, httponly=True, samesite="strict", path="/")


# -- the app ----------------------------------------------------------------------------------

def create_app(state: AppState | None = None, guard: GuardConfig | None = None,
               viewer: "FrameBroadcast | None" = None) -> Starlette:
    """The ASGI app: the full web app for ``state``, or (``live --serve``) a page showing the
    pictures published to ``viewer``."""
    routes = []
    if state is not None:
        routes += _app_routes(state)
    if viewer is not None:
        routes += _viewer_routes(viewer)

    async def client_error(request, exc: ClientError):
        return JSONResponse({"error": str(exc), **exc.extra}, exc.status, headers={"Cache-Control": "no-store"})

    async def user_error(request, exc: TalkingHeadError):
        session = _session_or_none(state, request) if state is not None else None
        message = session.user_message(str(exc)) if session else str(exc)
        return JSONResponse({"error": message}, status_for(exc))

    async def http_error(request, exc: HTTPException):
        message = {404: f"no such page: {request.url.path}", 405: "method not allowed"}.get(exc.status_code,
                                                                                                str(exc.detail))
        return JSONResponse({"error": message}, exc.status_code)

    async def bug(request, exc: Exception):
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the server's log"}, 500)

    @asynccontextmanager
    async def lifespan(app):
        yield
        if state is not None:
            await anyio.to_thread.run_sync(state.close)

    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={ClientError: client_error, TalkingHeadError: user_error,
                                        HTTPException: http_error, Exception: bug})
    guard = guard or GuardConfig(host_names={"127.0.0.1", "localhost", "[::1]", "::1"})
    if state is not None:
        guard.body_limits = {**state.body_limits(), **guard.body_limits}
    app.add_middleware(RequestGuard, config=guard)
    app.state.token = guard.token
    return app


def _session_or_none(state: AppState, request) -> Session | None:
    return state.sessions.get(cookie_value(request.scope, COOKIE))


def _app_routes(state: AppState) -> list:
    limits = state.limits
    page = resources.files("talkinghead.webapp").joinpath("static/index.html").read_bytes()

    def session_of(request) -> Session:
        session = _session_or_none(state, request)
        if session is None:
            raise ClientError(401, "no session (it expired, or the page was not loaded): reload the page",
                              session=False)
        return session

    async def json_of(request: Request) -> dict:
        return parse_json(await request.body())

    def avatar_summary(session: Session) -> dict | None:
        if session.avatar is None:
            return None
        version = session.avatar_version
        return {"size": session.output_size or session.avatar.output_size, "still": f"/api/avatar/still.jpg?v={version}",
                "turn": f"/api/avatar/turn.webp?v={version}", "download": "/api/avatar.avatar"}

    async def index(request):
        return Response(page, media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-store"})

    async def new_session(request):
        session = _session_or_none(state, request)
        fresh = session is None
        if fresh:
            session = state.sessions.create()
        response = JSONResponse({"limits": limits.public(), "avatar": avatar_summary(session), "new": fresh})
        if fresh:
            session_cookie(response, session)
        return response

    async def login(request):
        data = await json_of(request)
        token = request.app.state.token
        if token is None:
            return JSONResponse({"ok": True})
        given = data.get("token")
        if not isinstance(given, str) or not hmac.compare_digest(given.encode(), token.encode()):
            await asyncio.sleep(0.5)  # no fast guessing
            raise ClientError(401, "wrong access token", login=True)
        response = JSONResponse({"ok": True})
        response.set_cookie(AUTH_COOKIE, token, httponly=True, samesite="strict", path="/")
        return response

    async def get_limits(request):
        return JSONResponse(limits.public())

    async def upload(request: Request):
        session = session_of(request)
        kind = request.query_params.get("kind", "photo")
        if kind not in ("photo", "video"):
            raise ClientError(400, f"kind={kind[:20]}: use photo or video")
        photo = kind == "photo"
        limit_mb = limits.max_photo_mb if photo else limits.max_video_mb
        length = int(request.headers.get("content-length", "0"))
        if length > limit_mb * 2**20 + FORM_OVERHEAD:
            raise ClientError(413, f"upload too large: {length / 2**20:.1f} MB (limit {limit_mb:g} MB)")
        session.check_quota(length - FORM_OVERHEAD)
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise ClientError(400, "send the file as a multipart form (field 'file')")
        async with request.form(max_files=1, max_fields=2, max_part_size=4096) as form:
            part = form.get("file")
            if part is None or isinstance(part, str):
                raise ClientError(400, "the form has no 'file' field")
            name = part.filename or "upload"
            upload_id, path = session.new_upload_path(name, IMAGE_EXTENSIONS if photo else VIDEO_EXTENSIONS)
            try:
                size = await anyio.to_thread.run_sync(_copy_upload, part.file, path, int(limit_mb * 2**20))
                if size == 0:
                    raise ClientError(400, f"{path.name}: empty file")
                if size > limit_mb * 2**20:
                    raise ClientError(413, f"upload too large (limit {limit_mb:g} MB)")
                if photo:  # from the header: the wrong type or a huge picture is refused now
                    work.check_photo(path, limits.max_photo_megapixels * 1e6)
                else:
                    from talkinghead.data.video import probe_video

                    await anyio.to_thread.run_sync(probe_video, path)
                session.check_quota(size)
            except BaseException:
                session.discard(path)
                raise
        session.keep_upload(upload_id, path)
        return JSONResponse({"upload": upload_id, "name": path.name})

    def uploads_of(session: Session, ids) -> list[Path]:
        if not isinstance(ids, list) or not ids:
            raise ClientError(400, "choose at least one file first")
        try:
            return [session.uploads[i].path for i in ids]
        except (KeyError, TypeError):
            raise ClientError(400, "unknown upload (it belongs to another session, or the session expired)") from None

    async def avatar(request):
        session = session_of(request)
        data = await json_of(request)
        paths = uploads_of(session, data.get("uploads"))
        if len(paths) > limits.max_photos:
            raise ClientError(400, f"{len(paths)} photos: at most {limits.max_photos}")
        steps = int_field(data, "steps", 0, limits.max_steps, default=0)
        size = int_field(data, "size", *work.OUTPUT_SIZES)
        job = state.jobs.submit(session, "avatar",
                                lambda j: work.build_avatar(session, j, paths, state.checkpoint, steps, size))
        return JSONResponse({"job": job.id})

    async def video(request):
        session = session_of(request)
        data = await json_of(request)
        (path,) = uploads_of(session, [data["upload"]] if data.get("upload") else None)
        if session.avatar is None:
            raise ClientError(409, "build an avatar first (Avatar tab)")
        side, paste = bool_field(data, "side_by_side"), bool_field(data, "paste_back")
        if paste and session.avatar.source_image is None:
            raise ClientError(409, "this avatar has no source photo to paste back into")
        job = state.jobs.submit(session, "video", lambda j: work.render_video(session, j, path, side, paste))
        return JSONResponse({"job": job.id})

    def job_of(request):
        job = session_of(request).jobs.get(request.path_params["job"])
        if job is None:
            raise ClientError(404, "no such job in this session")
        return job

    async def job_state(request):
        return JSONResponse(job_of(request).as_dict(), headers={"Cache-Control": "no-store"})

    async def job_cancel(request):
        job = job_of(request)
        state.jobs.cancel(job)
        return JSONResponse(job.as_dict())

    async def download_avatar(request):
        session = session_of(request)
        if session.avatar_file is None:
            raise ClientError(404, "this session has no avatar yet")
        return FileResponse(session.avatar_file, media_type="application/octet-stream",
                            filename="talkinghead.avatar")

    async def preview(request):
        session = session_of(request)
        name = request.path_params["name"]
        path = session.previews.get({"still.jpg": "still", "turn.webp": "turn"}.get(name, ""))
        if path is None:
            raise ClientError(404, "this session has no avatar yet")
        return FileResponse(path, media_type="image/jpeg" if name.endswith(".jpg") else "image/webp",
                            headers={"Cache-Control": "no-store"})

    async def expression(request):
        session = session_of(request)
        controls = expression_from(await json_of(request))
        if not session.render_lock.acquire(blocking=False):
            raise ClientError(429, "the previous picture is still being rendered; this one was dropped")
        try:
            jpeg = await anyio.to_thread.run_sync(work.expression_still, session, controls,
                                                  limiter=state.live_limiter)
        finally:
            session.render_lock.release()
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    async def download_result(request):
        session = session_of(request)
        job = session.jobs.get(request.path_params["job"])
        if job is None or job.kind != "video" or job.state != "done":
            raise ClientError(404, "no such video in this session")
        return FileResponse(session.folder / f"video-{job.id}.mp4", media_type="video/mp4",
                            filename="talkinghead.mp4")

    async def live_reset(request):
        session = session_of(request)
        if session.live is not None:
            session.live.driver.reset_reference()
        return JSONResponse({"ok": True})

    async def live_socket(websocket: WebSocket):
        session = _session_or_none(state, websocket)
        await websocket.accept()
        if session is None:
            await websocket.send_json({"error": "no session (it expired): reload the page"})
            return await websocket.close(4401)
        await LiveConnection(state, session, websocket).run()

    return [
        Route("/", index),
        Route("/api/session", new_session, methods=["POST"]),
        Route("/api/login", login, methods=["POST"]),
        Route("/api/limits", get_limits),
        Route("/api/upload", upload, methods=["POST"]),
        Route("/api/avatar", avatar, methods=["POST"]),
        Route("/api/video", video, methods=["POST"]),
        Route("/api/job/{job}", job_state),
        Route("/api/job/{job}/cancel", job_cancel, methods=["POST"]),
        Route("/api/avatar.avatar", download_avatar),
        Route("/api/avatar/{name}", preview),
        Route("/api/expression", expression, methods=["POST"]),
        Route("/api/result/{job}.mp4", download_result),
        Route("/api/live/reset", live_reset, methods=["POST"]),
        WebSocketRoute("/api/live", live_socket),
    ]


def _copy_upload(source, path: Path, limit: int) -> int:
    """Copy a spooled upload into the session's folder, stopping past ``limit`` bytes."""
    source.seek(0)
    size = 0
    with open(path, "wb") as out:
        while chunk := source.read(2**20):
            size += len(chunk)
            if size > limit:
                break
            out.write(chunk)
    return size


# -- live --serve: a page showing published pictures ------------------------------------------

class FrameBroadcast:
    """The newest picture of ``live --serve``, published from the live loop's thread and served
    as ``/frame.jpg`` and an MJPEG ``/stream.mjpg``."""

    def __init__(self):
        self.jpeg: bytes | None = None
        self.number = 0
        self._lock = threading.Lock()

    def publish(self, rgb) -> None:
        jpeg = work.encode_jpeg(rgb, 85)
        with self._lock:
            self.jpeg, self.number = jpeg, self.number + 1

    def latest(self) -> tuple[int, bytes | None]:
        with self._lock:
            return self.number, self.jpeg


class PictureServer:
    """``live --serve PORT``: the newest shown picture at ``url`` (a page, ``/frame.jpg``,
    ``/stream.mjpg``), served on loopback by this module's server in a thread."""

    def __init__(self, port: int = 0):
        self.broadcast = FrameBroadcast()
        self.server = BackgroundServer(create_app(viewer=self.broadcast), ServerOptions(port=port))
        self.url = self.server.url

    def publish(self, rgb) -> None:
        self.broadcast.publish(rgb)

    def stop(self) -> None:
        self.server.stop()


VIEWER_PAGE = (b"<!doctype html><title>talkinghead live</title><body style='margin:0;background:#111'>"
               b"<img src='/stream.mjpg' style='display:block;margin:auto;max-height:100vh'></body>")


def _viewer_routes(viewer: FrameBroadcast) -> list:
    async def page(request):
        return Response(VIEWER_PAGE, media_type="text/html; charset=utf-8")

    async def frame(request):
        for _ in range(250):  # up to 5 s for the first picture
            _, jpeg = viewer.latest()
            if jpeg is not None:
                return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})
            await asyncio.sleep(0.02)
        return JSONResponse({"error": "no picture yet"}, 503)

    async def stream(request):
        async def parts():
            shown = -1
            while True:
                number, jpeg = viewer.latest()
                if jpeg is not None and number != shown:
                    shown = number
                    yield (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: " + str(len(jpeg)).encode()
                           + b"\r\n\r\n" + jpeg + b"\r\n")
                await asyncio.sleep(0.01)

        return StreamingResponse(parts(), media_type="multipart/x-mixed-replace; boundary=frame")

    return [Route("/", page), Route("/frame.jpg", frame), Route("/stream.mjpg", stream)]


# -- serving ----------------------------------------------------------------------------------

@dataclass
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 0
    timeout_keep_alive: int = 5
    limit_concurrency: int = 200
    ws_max_size: int = 4 * 2**20
    graceful_shutdown_s: int = 5


def listen(host: str, port: int) -> socket.socket:
    """A listening socket (so the port is known before serving); one line if that fails."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, address = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        raise TalkingHeadError(f"{host}:{port}: cannot listen there ({exc.strerror or exc})") from None
    sock.set_inheritable(True)
    return sock


def make_server(app, options: ServerOptions):
    """A uvicorn server for ``app`` with this project's timeouts and limits (not started)."""
    import uvicorn

    config = uvicorn.Config(app, http=GuardedH11Protocol, ws="wsproto", lifespan="on", log_config=None,
                            access_log=False, timeout_keep_alive=options.timeout_keep_alive,
                            limit_concurrency=options.limit_concurrency, ws_max_size=options.ws_max_size,
                            timeout_graceful_shutdown=options.graceful_shutdown_s, server_header=False)
    return uvicorn.Server(config)


class BackgroundServer:
    """A server in a thread (``live --serve``, tests): ``url`` once started; ``stop()`` ends it."""

    def __init__(self, app, options: ServerOptions):
        self.socket = listen(options.host, options.port)
        host, port = self.socket.getsockname()[:2]
        self.url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
        self.server = make_server(app, options)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]},
                                        name="web-server", daemon=True)
        self._thread.start()
        while not self.server.started and self._thread.is_alive():
            threading.Event().wait(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=30)
        self.socket.close()

