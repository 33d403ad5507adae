"""`talkinghead app`: a local web UI. Upload photos → an avatar (feed-forward or fine-tuned,
with progress, shown still and turning its head, with expression sliders) to download; a
driving video → an mp4 with its audio (side by side or pasted back); a live tab where the
browser's webcam drives the avatar. Each browser has its own session; uploads have size,
pixel and per-session limits; bad input is explained in the page."""

from __future__ import annotations

import argparse

from talkinghead.validation import float_in, int_in

EXAMPLES = """examples:
  talkinghead app                       # then open http://127.0.0.1:7860/
  talkinghead app --port 8080 --checkpoint runs/meta/latest.safetensors
  talkinghead app --host 0.0.0.0        # on the network: prints an access token to give users
Serves on 127.0.0.1 only unless --host says otherwise. Any other address needs an access
token (printed at start, or given with --token); the page asks for it. Ctrl-C stops the
server (exit 130; SIGTERM: 143).
"""


def add_parser(sub) -> None:
    p = sub.add_parser("app", help="a local web UI: photos → avatar, video → mp4, webcam → live avatar",
                       description=__doc__, epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int_in(0, 65535), default=7860, help="port (0: any free port; default 7860)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: this computer only)")
    p.add_argument("--token", default=None,
                   help="access token for a server not on loopback (default: a random one, printed)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="another name browsers use to reach this server (checked against the Host header)")
    p.add_argument("--checkpoint", default=None, help="meta checkpoint (default: the bundled model)")
    p.add_argument("--max-photo-mb", type=float_in(0, 1024, lo_open=True), default=20.0,
                   help="largest photo upload (MB; default 20)")
    p.add_argument("--max-video-mb", type=float_in(0, 4096, lo_open=True), default=100.0,
                   help="largest video upload (MB; default 100)")
    p.add_argument("--max-photo-megapixels", type=float_in(0.1, 200), default=40.0,
                   help="largest photo, from its header (default 40)")
    p.add_argument("--session-quota-mb", type=float_in(1, 100_000), default=300.0,
                   help="most MB of uploads one browser keeps at once (default 300)")
    p.add_argument("--max-steps", type=int_in(0, 10_000), default=400, help="most fine-tuning steps a user may ask for")
    p.add_argument("--max-sessions", type=int_in(1, 1000), default=16, help="most browsers served at once")
    p.add_argument("--max-jobs", type=int_in(1, 100), default=2, help="most jobs one browser has waiting or running")
    p.add_argument("--threads", type=int_in(1, 256), default=None, help="torch threads (default: torch's)")
    p.set_defaults(run=run)


def run(args) -> int:
    import os
    import secrets
    import sys
    import tempfile
    from pathlib import Path

    from talkinghead.errors import TalkingHeadError
    from talkinghead.infer.bundled import resolve_checkpoint
    from talkinghead.signals import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated
    from talkinghead.webapp.guard import GuardConfig, allowed_host_names, loopback
    from talkinghead.webapp.server import AppLimits, AppState, ServerOptions, create_app, listen, make_server

    token = args.token
    if token is not None and len(token) < 12:
        raise TalkingHeadError("--token: use at least 12 characters (or leave it out for a random one)")
    if token is None and not loopback(args.host):
        token = secrets.token_urlsafe(18)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    limits = AppLimits(max_photo_mb=args.max_photo_mb, max_video_mb=args.max_video_mb,
                       max_photo_megapixels=args.max_photo_megapixels, session_quota_mb=args.session_quota_mb,
                       max_steps=args.max_steps, max_sessions=args.max_sessions, max_jobs_per_session=args.max_jobs)
    checkpoint = resolve_checkpoint(args.checkpoint)
    sock = listen(args.host, args.port)
    code = 0
    with tempfile.TemporaryDirectory(prefix="talkinghead-app-") as workdir:
        state = AppState(checkpoint, Path(workdir), limits)
        guard = GuardConfig(host_names=allowed_host_names(args.host, tuple(args.allow_host)), token=token)
        server = make_server(create_app(state, guard), ServerOptions(args.host, args.port))
        host, port = sock.getsockname()[:2]
        shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, f"[{host}]" if ":" in host else host)
        print(f"talkinghead app at http://{shown}:{port}/  (Ctrl-C to stop)", flush=True)
        if token is not None:
            print(f"access token: {token}  (the page asks for it)", flush=True)
        try:
            server.run(sockets=[sock])  # uvicorn stops on SIGINT/SIGTERM, then raises the signal again
        except KeyboardInterrupt:
            code = EXIT_INTERRUPTED
        except Terminated:
            code = EXIT_TERMINATED
        finally:
            sock.close()
            state.close()  # jobs cancelled and joined (uvicorn's lifespan did it unless it failed to start)
        print("server stopped", file=sys.stderr, flush=True)
    if not state.stopped_cleanly:  # a job thread is still inside native code: do not let it abort the exit
        os._exit(code or 1)
    return code
