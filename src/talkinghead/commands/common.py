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


def add_expression_arguments(parser) -> None:
    """``--eyes SCALE`` and ``--lips SCALE``: the driver's eye and mouth openness, scaled on the
    adapted landmarks before rendering (:mod:`talkinghead.infer.expression`)."""
    from talkinghead.infer.expression import RANGES
    from talkinghead.validation import float_in

    for name, what in (("eyes", "eye openness (0: eyes closed in every frame"),
                       ("lips", "mouth openness (0: mouth closed in every frame")):
        lo, hi = RANGES[name]
        parser.add_argument(f"--{name}", type=float_in(lo, hi), default=1.0, metavar="SCALE",
                            help=f"scale the driver's {what}; 1: as driven; up to {hi:g})")


def expression_from_args(args):
    """The :class:`~talkinghead.infer.expression.Expression` of ``--eyes``/``--lips``, or None (as driven)."""
    from talkinghead.infer.expression import Expression

    expression = Expression(eyes=args.eyes, lips=args.lips)
    return None if expression.is_identity else expression


def add_size_argument(parser) -> None:
    """``--size PX`` (``args.size``): the face's output size; default the source face's own
    resolution, capped at ``detail.max_size``, never below the network's (:mod:`talkinghead.infer.detail`)."""
    from talkinghead.config import DetailConfig
    from talkinghead.validation import int_in

    cap = DetailConfig().max_size
    parser.add_argument("--size", type=int_in(1, cap), default=None, metavar="PX",
                        help=f"output size of the face in px, up to {cap} (default: the source face's own "
                             f"resolution, at most {cap}, at least the network's)")
