"""`talkinghead live`: drive an avatar in real time from a camera or a video file standing in
for one; capture, tracking and rendering run in parallel threads and frames are dropped, not
queued, when the machine cannot keep up. Shows fps and latency on the picture."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from talkinghead.commands.common import (add_expression_arguments, add_person_arguments, add_size_argument,
                                         add_smoothing_argument)
from talkinghead.errors import TalkingHeadError

EXAMPLES = """examples:
  talkinghead live --avatar me.avatar --camera 0                 # a window (needs OpenCV with GUI)
  talkinghead live --source photo.jpg --camera 0 --serve 8765    # watch at http://127.0.0.1:8765/
  talkinghead live --avatar me.avatar --video speech.mp4 --no-window -o live.mp4 --max-frames 200
The window closes with q or Esc; Ctrl-C ends any session cleanly (exit 130). With
--video the file plays at its native rate, like a camera (--as-fast-as-possible reads it
without pacing). When the driver's face is lost the last good pose is held, and the picture
says so. A recording (-o) keeps the input's time: frames dropped live repeat the frame
before, so a 7.2-s video gives a 7.2-s file, with the video's audio.
"""


def add_parser(sub) -> None:
    p = sub.add_parser("live", help="drive an avatar in real time from a camera or video",
                       description=__doc__, epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_person_arguments(p, "photo(s) of the person: a feed-forward avatar is built on the fly",
                         "meta checkpoint (with --source, or an FF avatar's; default: bundled)")
    drive = p.add_mutually_exclusive_group(required=True)
    drive.add_argument("--camera", type=int, metavar="INDEX", help="camera index (0 = the default camera)")
    drive.add_argument("--video", help="a video file (or stream URL) standing in for a camera")
    p.add_argument("--steps", type=int, default=0, help="fine-tuning steps with --source (default 0 = FF, instant)")
    p.add_argument("--absolute", action="store_true", help="driver's landmarks aligned as they are (default: relative)")
    add_smoothing_argument(p)
    add_expression_arguments(p)
    p.add_argument("--side-by-side", action="store_true", help="show the driver beside the avatar")
    add_size_argument(p)
    p.add_argument("--display-size", type=int, default=None,
                   help="shown size of the avatar in pixels (default: the rendered size, --size)")
    p.add_argument("--no-window", action="store_true", help="no window (with --serve or -o)")
    p.add_argument("--serve", type=int, default=None, metavar="PORT",
                   help="also serve the picture to a browser at http://127.0.0.1:PORT/ (0: any free port)")
    p.add_argument("-o", "--output", default=None,
                   help="also record what is shown to an .mp4, in the input's time: a frame dropped live "
                        "repeats the one before, so the file lasts as long as the input (with a video's audio)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many captured frames")
    p.add_argument("--loop", action="store_true", help="restart the --video file at its end")
    p.add_argument("--as-fast-as-possible", action="store_true",
                   help="read --video as fast as it decodes instead of at its native rate")
    p.add_argument("--render-delay", type=float, default=0.0, metavar="MS",
                   help="slow the renderer by MS milliseconds per frame (to see frame dropping)")
    p.add_argument("--onnx", action="store_true",
                   help="render with onnxruntime instead of PyTorch (faster on CPU; needs the [app] extra)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for rendering (default 1: tracking and capture run beside it)")
    p.set_defaults(run=run)


def load_live_avatar(args):
    from talkinghead.infer.avatar import Avatar
    from talkinghead.infer.bundled import resolve_checkpoint

    if args.avatar:
        return Avatar.load(args.avatar, checkpoint=args.checkpoint, device="cpu")
    sources = args.source[0] if len(args.source) == 1 else args.source
    return Avatar.from_images(sources, resolve_checkpoint(args.checkpoint), finetune_steps=args.steps, device="cpu")


def open_source(args):
    """(frames, fps) of --video (a file or a stream URL) or --camera."""
    from talkinghead.infer.live import VideoFileSource, camera_frames

    if args.video is not None:
        if "://" not in args.video and not Path(args.video).exists():
            raise TalkingHeadError(f"{args.video}: video not found")
        if "://" in args.video:  # a stream: frames come at their own rate, like a camera's
            return camera_frames(args.video), 25.0
        source = VideoFileSource(args.video, realtime=not args.as_fast_as_possible, loop=args.loop)
        return source, source.fps
    return camera_frames(args.camera), 25.0


def run(args) -> int:
    from talkinghead.infer.expression import Expression
    from talkinghead.infer.live import VideoFileSource
    from talkinghead.infer.live_session import LiveSettings, has_window_support, run_live
    from talkinghead.webapp.server import PictureServer

    if args.output and not args.output.lower().endswith(".mp4"):
        raise TalkingHeadError(f"{args.output}: output must be an .mp4 file")
    if args.max_frames is not None and args.max_frames <= 0:
        raise TalkingHeadError(f"--max-frames {args.max_frames}: must be positive")
    if args.display_size is not None and not 32 <= args.display_size <= 2048:
        raise TalkingHeadError(f"--display-size {args.display_size}: use 32 to 2048 pixels")
    if args.render_delay < 0:
        raise TalkingHeadError(f"--render-delay {args.render_delay}: must be >= 0")
    window, serve_port = not args.no_window, args.serve
    if window and not has_window_support():
        if serve_port is None and not args.output:
            print("note: this OpenCV has no window support (opencv-python-headless); serving to the "
                  "browser instead (--serve 0). Use --no-window with --serve PORT or -o FILE to choose.",
                  file=sys.stderr)
            serve_port = 0
        window = False
    settings = LiveSettings(window=window, serve_port=serve_port, output=args.output, max_frames=args.max_frames,
                            relative=not args.absolute, smoothing=not args.no_smooth,
                            expression=Expression(eyes=args.eyes, lips=args.lips),
                            size=args.size, display_size=args.display_size, side_by_side=args.side_by_side,
                            render_delay_s=args.render_delay / 1000, onnx=args.onnx, threads=args.threads)
    avatar = load_live_avatar(args)
    source, fps = open_source(args)
    # A video file's audio goes into the recording (a camera or a stream has none to copy).
    audio = args.video if isinstance(source, VideoFileSource) else None
    return run_live(avatar, source, fps, settings, audio_from=audio, serve=PictureServer)
