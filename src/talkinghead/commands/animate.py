"""`talkinghead animate` (not implemented yet)."""

from __future__ import annotations

from talkinghead.errors import TalkingHeadError


def add_parser(sub) -> None:
    p = sub.add_parser("animate", help="(not implemented yet)")
    p.set_defaults(run=run)


def run(args) -> int:
    raise TalkingHeadError("`talkinghead animate` is not implemented yet in this version")
