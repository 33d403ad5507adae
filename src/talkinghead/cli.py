"""The ``talkinghead`` command line. Each sub-command lives in ``talkinghead.commands.<name>``
with ``add_parser(subparsers)`` and ``run(args) -> int``; this module only dispatches and turns
user errors into one-line messages with a documented exit status:

    0   success
    1   unexpected internal error (a bug: please report the traceback)
    2   bad input, usage or environment (unreadable file, wrong checkpoint, bad option or
        value, existing folder given as output, full disk, permission denied, no GPU)
    3   nothing usable in the input (no face found anywhere)
    130 interrupted (Ctrl-C)
    143 terminated (SIGTERM: ``kill``, ``timeout``, a scheduler)

Whatever the exit, outputs are never left half-written and no temporary file stays behind.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from talkinghead import __version__, signals
from talkinghead.errors import TalkingHeadError
from talkinghead.fileio import os_error_message

COMMANDS = ("demo", "prepare", "train", "train_mouth", "finetune", "animate", "evaluate", "export", "live", "app")

EPILOG = """pipeline:
  talkinghead prepare VIDEOS... --out data/            # crops + landmarks
  talkinghead train data/ --preset small --out runs/meta  # meta-learning (stage 1)
  talkinghead finetune photo.jpg --checkpoint runs/meta/latest.safetensors -o me.avatar
  talkinghead animate --avatar me.avatar --driving video.mp4 -o out.mp4
  talkinghead evaluate --checkpoint ... --data data/ --split-file dev.txt -o report/
"""


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line like every other error (``error: argument --fps: ...``), exit 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="talkinghead",
        description="Few-shot talking-head models (Zakharov et al., ICCV 2019).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"talkinghead {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"talkinghead.commands.{name}")
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s: %(message)s" if args.verbose else "%(message)s",
    )
    if not args.command:
        parser.print_help()
        return 2
    signals.install_cli_handlers()
    try:
        return int(args.run(args) or 0)
    except TalkingHeadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return signals.EXIT_INTERRUPTED
    except signals.Terminated:
        print("terminated", file=sys.stderr)
        return signals.EXIT_TERMINATED
    except Exception as exc:  # an OS error (full disk, ...) is the environment, not a bug
        message = os_error_message(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
