"""A live session: avatar + source + pipeline, shown in a window, served to a browser as MJPEG
(by the web app's server, which the caller passes in), and/or recorded; ends on q/Esc, a closed
window, the end of the input, ``max_frames``, or Ctrl-C/SIGTERM (through :mod:`talkinghead.signals`).
``talkinghead live`` (:mod:`talkinghead.commands.live`) turns its arguments into :class:`LiveSettings`."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np

from talkinghead.errors import TalkingHeadError
from talkinghead.infer.expression import Expression, apply_expression
from talkinghead.infer.live import FACE_MESSAGES, LiveDriver, LivePipeline, LiveRecorder, TorchRenderer, compose_view

if TYPE_CHECKING:
    from talkinghead.infer.avatar import Avatar

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


@dataclass
class LiveSettings:
    """How a live session runs and where its pictures go (``talkinghead live``'s options, typed)."""

    window: bool = True  # show an OpenCV window (needs a GUI build: :func:`has_window_support`)
    serve_port: int | None = None  # serve the picture to a browser on this port (0: any free one)
    output: str | None = None  # record what is shown to this .mp4, in the input's time
    max_frames: int | None = None  # stop after this many captured frames
    relative: bool = True  # the driver's motion on the avatar's own face shape (else absolute)
    smoothing: bool = True  # One-Euro landmark smoothing and shot cross-fades
    expression: Expression = field(default_factory=Expression)  # --eyes/--lips on adapted landmarks
    size: int | None = None  # output size of the rendered face (default: Avatar.output_size)
    display_size: int | None = None  # shown size of the avatar in pixels (default: the rendered size)
    side_by_side: bool = False  # the driver beside the avatar
    render_delay_s: float = 0.0  # slow the renderer (to see frame dropping)
    onnx: bool = False  # render with onnxruntime instead of PyTorch
    threads: int = 1  # torch/onnxruntime threads for rendering

    def __post_init__(self):
        if not self.window and self.serve_port is None and not self.output and self.max_frames is None:
            raise TalkingHeadError("--no-window: nothing would show the avatar; add --serve PORT, -o FILE or "
                                   "--max-frames N")


def run_live(avatar: Avatar, source: Iterable[np.ndarray], fps: float, settings: LiveSettings,
             audio_from: str | None = None, serve: Callable[[int], object] | None = None) -> int:
    """Drive ``avatar`` from ``source`` (RGB frames: a camera, a stream or a
    :class:`~talkinghead.infer.live.VideoFileSource`) at ``fps`` until it ends, the window closes or
    a stop signal comes; returns the exit code (0, or 130/143 when interrupted).
    ``serve(port)``: for ``settings.serve_port``, a server of the shown pictures with ``url``,
    ``publish(rgb)`` and ``stop()`` (the web app's, given by the command). ``audio_from``: a file
    whose audio goes into the recording."""
    import torch

    from talkinghead.data.landmarks import get_detector
    from talkinghead.data.tracking import describe_tracking
    from talkinghead.signals import stop_requests

    if settings.threads:
        torch.set_num_threads(settings.threads)
    if settings.serve_port is not None and serve is None:
        raise TalkingHeadError("--serve: no picture server was given to run_live")
    window = settings.window
    driver = LiveDriver(avatar.reference_landmarks, get_detector("dlib"),
                        mode="relative" if settings.relative else "absolute", smoothing=settings.smoothing)
    if settings.onnx:
        from talkinghead.infer.live import OnnxAvatarRenderer

        renderer = OnnxAvatarRenderer(avatar, threads=settings.threads or 1, cross_fade=settings.smoothing,
                                      size=settings.size)
    else:
        renderer = TorchRenderer(avatar, cross_fade=settings.smoothing, size=settings.size)
    expression = settings.expression
    if not expression.is_identity:  # --eyes/--lips on the adapted landmarks, before rendering
        render_plain = renderer
        renderer = lambda landmarks: render_plain(apply_expression(landmarks, expression))  # noqa: E731
    pipeline = LivePipeline(source, driver, renderer, max_frames=settings.max_frames,
                            render_delay=settings.render_delay_s)
    server = serve(settings.serve_port) if settings.serve_port is not None else None
    if server is not None:
        print(f"serving the live avatar at {server.url}  (Ctrl-C to stop)", flush=True)
    recorder = LiveRecorder(settings.output, fps, audio_from=audio_from) if settings.output else None
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
                view = compose_view(frame, pipeline.current_fps(), settings.display_size, settings.side_by_side)
                if server is not None:
                    server.publish(view)
                if recorder is not None:
                    recorder.add(view, frame.time)
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
            server.stop()
        if recorder is not None:
            recorder.close(until=pipeline.last_time)
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
        extra = f", {recorder.skipped} skipped while the encoder was busy" if recorder.skipped else ""
        print(f"wrote {settings.output}: {recorder.written} frames, {recorder.seconds:.2f} s "
              f"({recorder.repeated} repeat the frame before: dropped live{extra})")
    if exit_code:
        print("interrupted" if exit_code == 130 else "terminated", file=sys.stderr)
    return exit_code
