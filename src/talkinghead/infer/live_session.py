"""The `talkinghead live` session: avatar + source + pipeline, shown in a window, served to a
browser as MJPEG, and/or recorded; ends on q/Esc, a closed window, the end of the input,
``--max-frames``, or Ctrl-C/SIGTERM (through :mod:`talkinghead.signals`)."""

from __future__ import annotations

import logging
import queue
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np

from talkinghead.errors import TalkingHeadError
from talkinghead.infer.live import (FACE_MESSAGES, LiveDriver, LivePipeline, TorchRenderer, VideoFileSource,
                                    camera_frames, compose_view)

log = logging.getLogger(__name__)

WINDOW = "talkinghead live"


def has_window_support() -> bool:
    """Whether this OpenCV build can open windows (opencv-python-headless cannot)."""
    try:
        info = cv2.getBuildInformation()
    except cv2.error:
        return False
    for line in info.splitlines():
        if line.strip().startswith("GUI:"):
            return line.split(":", 1)[1].strip().upper() not in ("NONE", "")
    return False


class MjpegServer:
    """Serves the newest shown picture at ``/`` (a page), ``/stream.mjpg`` and ``/frame.jpg``,
    on the loopback interface only."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1"):
        self._jpeg: bytes | None = None
        self._cond = threading.Condition()
        self._closed = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # no access log on the console
                pass

            def do_GET(self):
                if self.path == "/":
                    body = (b"<!doctype html><title>talkinghead live</title><body style='margin:0;background:#111'>"
                            b"<img src='/stream.mjpg' style='display:block;margin:auto;max-height:100vh'></body>")
                    self._send(200, "text/html; charset=utf-8", body)
                elif self.path == "/frame.jpg":
                    jpeg = server.wait_frame(None, timeout=5)
                    if jpeg is None:
                        self._send(503, "text/plain", b"no frame yet")
                    else:
                        self._send(200, "image/jpeg", jpeg)
                elif self.path == "/stream.mjpg":
                    self.send_response(200)
                    self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                    self.end_headers()
                    last = None
                    try:
                        while True:
                            jpeg = server.wait_frame(last, timeout=1)
                            if server.closed:
                                return
                            if jpeg is None or jpeg is last:
                                continue
                            last = jpeg
                            self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                             + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                    except (BrokenPipeError, ConnectionResetError):
                        return
                else:
                    self._send(404, "text/plain", b"not found")

            def _send(self, status, ctype, body):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        try:
            self.httpd = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise TalkingHeadError(f"--serve {port}: cannot listen there ({exc.strerror or exc})") from None
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://{host}:{self.port}/"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="live-mjpeg", daemon=True)
        self._thread.start()

    @property
    def closed(self) -> bool:
        return self._closed

    def publish(self, rgb: np.ndarray) -> None:
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
        if ok:
            with self._cond:
                self._jpeg = buf.tobytes()
                self._cond.notify_all()

    def wait_frame(self, last, timeout: float):
        with self._cond:
            if self._jpeg is None or self._jpeg is last:
                self._cond.wait(timeout)
            return self._jpeg

    def close(self) -> None:
        self._closed = True
        with self._cond:
            self._cond.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()


class Recorder:
    """Writes shown pictures to an mp4 from its own thread; pictures arriving while the encoder
    is busy are skipped (and counted) rather than slowing the live loop."""

    def __init__(self, path: str, fps: float):
        from talkinghead.data.video import write_video

        self.path = path
        self.skipped = 0
        self.written = 0
        self.error: BaseException | None = None
        self._shape: tuple | None = None  # the first picture's; the encoder needs one size throughout
        self._queue: queue.Queue = queue.Queue(maxsize=8)

        def frames():
            while True:
                item = self._queue.get()
                if item is None:
                    return
                yield item

        def run():
            try:
                self.written = write_video(path, frames(), fps)
            except BaseException as exc:  # reported by close()
                self.error = exc

        self._thread = threading.Thread(target=run, name="live-recorder", daemon=True)
        self._thread.start()

    def add(self, rgb: np.ndarray) -> None:
        if self._shape is None:
            self._shape = rgb.shape
        if rgb.shape != self._shape:
            rgb = cv2.resize(rgb, (self._shape[1], self._shape[0]))
        try:
            self._queue.put_nowait(rgb)
        except queue.Full:
            self.skipped += 1

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self.error is not None:
            raise self.error


def load_live_avatar(args):
    from talkinghead.infer.avatar import Avatar
    from talkinghead.infer.bundled import resolve_checkpoint

    if args.avatar:
        return Avatar.load(args.avatar, checkpoint=args.checkpoint, device="cpu")
    sources = args.source[0] if len(args.source) == 1 else args.source
    return Avatar.from_images(sources, resolve_checkpoint(args.checkpoint), finetune_steps=args.steps, device="cpu")


def open_source(args):
    if args.video is not None:
        if "://" not in args.video and not Path(args.video).exists():
            raise TalkingHeadError(f"{args.video}: video not found")
        if "://" in args.video:  # a stream: frames come at their own rate, like a camera's
            return camera_frames(args.video), 25.0
        source = VideoFileSource(args.video, realtime=not args.as_fast_as_possible, loop=args.loop)
        return source, source.fps
    return camera_frames(args.camera), 25.0


def run_live(args) -> int:
    import torch

    from talkinghead.data.landmarks import get_detector
    from talkinghead.data.tracking import describe_tracking
    from talkinghead.signals import stop_requests

    if args.threads:
        torch.set_num_threads(args.threads)
    window = not args.no_window
    if window and not has_window_support():
        if args.serve is None and not args.output:
            print("note: this OpenCV has no window support (opencv-python-headless); serving to the "
                  "browser instead (--serve 0). Use --no-window with --serve PORT or -o FILE to choose.",
                  file=sys.stderr)
            args.serve = 0
        window = False
    if not window and args.serve is None and not args.output and args.max_frames is None:
        raise TalkingHeadError("--no-window: nothing would show the avatar; add --serve PORT, -o FILE or --max-frames N")
    avatar = load_live_avatar(args)
    source, fps = open_source(args)
    driver = LiveDriver(avatar.reference_landmarks, get_detector("dlib"),
                        mode="absolute" if args.absolute else "relative", smoothing=not args.no_smooth)
    if args.onnx:
        from talkinghead.infer.live import OnnxAvatarRenderer

        renderer = OnnxAvatarRenderer(avatar, threads=args.threads or 1, cross_fade=not args.no_smooth)
    else:
        renderer = TorchRenderer(avatar, cross_fade=not args.no_smooth)
    pipeline = LivePipeline(source, driver, renderer, max_frames=args.max_frames,
                            render_delay=args.render_delay / 1000)
    server = MjpegServer(args.serve) if args.serve is not None else None
    if server is not None:
        print(f"serving the live avatar at {server.url}  (Ctrl-C to stop)", flush=True)
    recorder = Recorder(args.output, fps) if args.output else None
    exit_code = 0
    previous_face = "ok"
    try:
        with stop_requests() as stop:
            for frame in pipeline.frames():
                if frame.face != previous_face and frame.face in FACE_MESSAGES:
                    print(f"frame {frame.index}: {FACE_MESSAGES[frame.face]}", file=sys.stderr, flush=True)
                elif frame.face == "ok" and previous_face != "ok":
                    print(f"frame {frame.index}: face found again", file=sys.stderr, flush=True)
                previous_face = frame.face
                view = compose_view(frame, pipeline.current_fps(), args.display_size, args.side_by_side)
                if server is not None:
                    server.publish(view)
                if recorder is not None:
                    recorder.add(view)
                if window:
                    cv2.imshow(WINDOW, cv2.cvtColor(view, cv2.COLOR_RGB2BGR))
                    key = cv2.waitKey(1) & 0xFF
                    if key in (ord("q"), 27) or cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) < 1:
                        break
                if stop.requested:
                    exit_code = stop.exit_code
                    break
    finally:
        pipeline.stop()
        if window:
            cv2.destroyAllWindows()
        if server is not None:
            server.close()
        if recorder is not None:
            recorder.close()
    s = pipeline.stats.summary()
    late = f" (+{s['late']} the reader was late for)" if s["late"] else ""
    print(f"live: {s['captured']} frames captured{late}, {s['shown']} shown, {s['dropped']} dropped; "
          f"{s['fps']:.1f} fps, latency {s['latency_ms_median']:.0f} ms median "
          f"({s['latency_ms_p90']:.0f} ms p90)")
    if s["face_lost"]:
        print(f"face lost in {s['face_lost']} shown frames: held the last good pose")
    if s["no_face"]:
        print(f"no face in view for {s['no_face']} shown frames: showed the avatar's own pose")
    print(describe_tracking(driver.tracker.stats))
    if recorder is not None:
        extra = f" ({recorder.skipped} skipped while the encoder was busy)" if recorder.skipped else ""
        print(f"wrote {args.output}: {recorder.written} frames{extra}")
    if exit_code:
        print("interrupted" if exit_code == 130 else "terminated", file=sys.stderr)
    return exit_code
