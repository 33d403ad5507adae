"""`talkinghead app`: a local web UI. Upload photos → an avatar (feed-forward or fine-tuned,
with progress) to download; a driving video → an mp4 with its audio (side by side or pasted
back); a live tab where the browser's webcam drives the avatar. Each browser has its own
session; uploads have size limits; bad input is explained in the page."""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  talkinghead app                       # then open http://127.0.0.1:7860/
  talkinghead app --port 8080 --checkpoint runs/meta/latest.safetensors
Serves on 127.0.0.1 only unless --host says otherwise (there is no login: anyone who can reach
the port can use it). Ctrl-C stops the server.
"""


def add_parser(sub) -> None:
    p = sub.add_parser("app", help="a local web UI: photos → avatar, video → mp4, webcam → live avatar",
                       description=__doc__, epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=7860, help="port (0: any free port; default 7860)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: this computer only)")
    p.add_argument("--checkpoint", default=None, help="meta checkpoint (default: the bundled model)")
    p.add_argument("--max-photo-mb", type=float, default=20.0, help="largest photo upload (MB)")
    p.add_argument("--max-video-mb", type=float, default=100.0, help="largest video upload (MB)")
    p.add_argument("--max-steps", type=int, default=400, help="most fine-tuning steps a user may ask for")
    p.add_argument("--max-sessions", type=int, default=16, help="most browsers served at once")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.set_defaults(run=run)


def run(args) -> int:
    import sys
    import tempfile
    from pathlib import Path

    from talkinghead.infer.bundled import resolve_checkpoint
    from talkinghead.signals import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated, install_cli_handlers
    from talkinghead.webapp.server import App, AppLimits, make_server

    install_cli_handlers()  # SIGTERM → Terminated: the sessions' files are removed on the way out
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    limits = AppLimits(max_photo_mb=args.max_photo_mb, max_video_mb=args.max_video_mb, max_steps=args.max_steps,
                       max_sessions=args.max_sessions)
    with tempfile.TemporaryDirectory(prefix="talkinghead-app-") as workdir:
        app = App(resolve_checkpoint(args.checkpoint), Path(workdir), limits)
        server = make_server(app, args.host, args.port)
        host, port = server.server_address[:2]
        print(f"talkinghead app at http://{host}:{port}/  (Ctrl-C to stop)", flush=True)
        code = 0
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            code = EXIT_INTERRUPTED
        except Terminated:
            code = EXIT_TERMINATED
        finally:
            server.server_close()
            app.sessions.close_all()
        print("server stopped", file=sys.stderr)
    return code
