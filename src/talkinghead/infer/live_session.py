"""The `talkinghead live` session: avatar + source + pipeline, shown in a window, served to a
browser as MJPEG (by the web app's server, which the command passes in), and/or recorded;
ends on q/Esc, a closed window, the end of the input, ``--max-frames``, or Ctrl-C/SIGTERM
(through :mod:`talkinghead.signals`)."""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

import cv2
import numpy as np

from talkinghead.errors import TalkingHeadError
from talkinghead.infer.expression import Expression, apply_expression
from talkinghead.infer.live import (FACE_MESSAGES, LiveDriver, LivePipeline, LiveRecorder, TorchRenderer,
                                    VideoFileSource, camera_frames, compose_view)

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


def run_live(args, serve=None) -> int:
    """``serve(port)``: for ``--serve``, a server of the shown pictures with ``url``,
    ``publish(rgb)`` and ``stop()`` (the web app's, given by the command)."""
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

        renderer = OnnxAvatarRenderer(avatar, threads=args.threads or 1, cross_fade=not args.no_smooth,
                                      size=getattr(args, "size", None))
    else:
        renderer = TorchRenderer(avatar, cross_fade=not args.no_smooth, size=getattr(args, "size", None))
    expression = Expression(eyes=args.eyes, lips=args.lips)
    if not expression.is_identity:  # --eyes/--lips on the adapted landmarks, before rendering
        render_plain = renderer
        renderer = lambda landmarks: render_plain(apply_expression(landmarks, expression))  # noqa: E731
    pipeline = LivePipeline(source, driver, renderer, max_frames=args.max_frames,
                            render_delay=args.render_delay / 1000)
    if args.serve is not None and serve is None:
        raise TalkingHeadError("--serve: no picture server was given to run_live")
    server = serve(args.serve) if args.serve is not None else None
    if server is not None:
        print(f"serving the live avatar at {server.url}  (Ctrl-C to stop)", flush=True)
    # A video file's audio goes into the recording (a camera or a stream has none to copy).
    audio = args.video if isinstance(source, VideoFileSource) else None
    recorder = LiveRecorder(args.output, fps, audio_from=audio) if args.output else None
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
        print(f"wrote {args.output}: {recorder.written} frames, {recorder.seconds:.2f} s "
              f"({recorder.repeated} repeat the frame before: dropped live{extra})")
    if exit_code:
        print("interrupted" if exit_code == 130 else "terminated", file=sys.stderr)
    return exit_code
