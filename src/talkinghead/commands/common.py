"""Command-line options that several commands share, so they read the same everywhere."""

from __future__ import annotations


def add_person_arguments(parser, source_help: str, checkpoint_help: str) -> None:
    """Who is rendered: ``--avatar`` (a saved avatar) or ``--source`` (image(s), the avatar is
    built on the fly from ``--checkpoint``)."""
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--avatar", help="avatar file made by `talkinghead finetune`")
    who.add_argument("--source", nargs="+", help=source_help)
    parser.add_argument("--checkpoint", default=None, help=checkpoint_help)


def add_smoothing_argument(parser) -> None:
    """``--no-smooth`` (``args.no_smooth``): drive with the landmarks as detected."""
    parser.add_argument("--no-smooth", "--no-smoothing", dest="no_smooth", action="store_true",
                        help="use the driving landmarks as detected and pick shots frame by frame "
                             "(default: landmarks One-Euro smoothed, shots cross-faded, against jitter)")
