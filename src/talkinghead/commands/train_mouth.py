"""`talkinghead train-mouth`: train the mouth generator (the inside of open mouths) on a
prepared data set's mouth crops. Not in the paper; see talkinghead.models.mouth.

Prepare the clips at 256 px or more (`talkinghead prepare ... --size 256`): at 128 px a mouth
is too small to show teeth. The result is one small safetensors file; use it with
`--set mouth.weights=FILE` (the bundled one is used otherwise).

exit status: 0 ok, 2 bad input (no data set, no training identities), 130 / 143 interrupted
"""

from __future__ import annotations

import argparse
import logging

from talkinghead.validation import int_in, float_in

log = logging.getLogger(__name__)

EXAMPLES = """examples:
  talkinghead prepare clips/ --out data256/ --size 256
  talkinghead train-mouth data256/ --split faces --out mouth.safetensors --steps 8000
  talkinghead train-mouth data256/ --split faces --out sharp.safetensors --init-from mouth.safetensors \
      --adversarial 0.03 --min-opening 0.1 --steps 2000
  talkinghead train-mouth data256/ --split faces --out small.safetensors --distill-from sharp.safetensors \
      --channels 12 24 48 64 --steps 3000
"""


def add_parser(sub) -> None:
    p = sub.add_parser("train-mouth", help="train the mouth generator on a prepared data set",
                       description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", help="folder written by `talkinghead prepare` (256 px or more)")
    p.add_argument("--out", required=True, help="mouth model file to write (.safetensors)")
    p.add_argument("--split", default=None,
                   help="train on the 'train' identities of a split ('faces': bundled, or a file); its "
                        "'dev' identities are scored as held out")
    p.add_argument("--steps", type=int_in(1), default=None, help="optimiser steps (default 6000)")
    p.add_argument("--batch-size", type=int_in(1), default=None, help="examples per step (default 16)")
    p.add_argument("--lr", type=float_in(0.0, lo_open=True), default=None, help="Adam learning rate (default 2e-4)")
    p.add_argument("--adversarial", type=float_in(0.0), default=None,
                   help="weight of a patch critic's hinge loss (default 0: L1 alone); best from --init-from")
    p.add_argument("--min-opening", type=float_in(0.0), default=None,
                   help="train on targets whose inner lips are at least this far apart, in inter-ocular "
                        "distances (default 0.04)")
    p.add_argument("--init-from", default=None, metavar="FILE", help="start from this mouth model's weights")
    p.add_argument("--distill-from", default=None, metavar="FILE",
                   help="learn this mouth model's output instead of the real mouths (with --channels: a "
                        "smaller, faster copy)")
    p.add_argument("--channels", type=int_in(1, 512), nargs="+", default=None,
                   help="a new generator's channels per level (default 16 32 64 96)")
    p.add_argument("--frames-per-clip", type=int_in(1), default=None, help="most frames cut per clip (default 400)")
    p.add_argument("--save-every", type=int_in(1), default=1000, help="write --out every N steps (default 1000)")
    p.add_argument("--threads", type=int_in(1), default=None, help="CPU threads (default: torch's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args) -> int:
    import torch

    from talkinghead.checkpoint import load_mouth_checkpoint
    from talkinghead.data.store import load_index
    from talkinghead.errors import TalkingHeadError
    from talkinghead.eval.splits import load_split, train_identities
    from talkinghead.train.mouth import MouthTrainConfig, cut_dataset, train_mouth

    if args.threads:
        torch.set_num_threads(args.threads)
    config = MouthTrainConfig()
    init = None
    if args.init_from:
        config.net, init, _ = load_mouth_checkpoint(args.init_from)
    if args.channels:
        if init is not None:
            raise TalkingHeadError("--channels builds a new generator: it cannot be combined with --init-from")
        config.net.channels = tuple(args.channels)
        config.net.validate()
    teacher = None
    if args.distill_from:
        from talkinghead.models.mouth import MouthGenerator

        teacher_config, weights, _ = load_mouth_checkpoint(args.distill_from)
        teacher = MouthGenerator(teacher_config).eval()
        teacher.load_state_dict(weights)
        config.net.size, config.net.span, config.net.grow = teacher_config.size, teacher_config.span, teacher_config.grow
    for name in ("steps", "batch_size", "lr", "frames_per_clip", "adversarial", "min_opening"):
        if getattr(args, name) is not None:
            setattr(config, name, getattr(args, name))
    available = sorted({row["identity"] for row in load_index(args.dataset)["clips"]})
    held_out: list[str] = []
    identities = available
    if args.split:
        split = load_split(args.split)
        identities = train_identities(split, available)
        held_out = sorted(set(split.get("dev", [])) & set(available))
        if not identities:
            raise TalkingHeadError(f"{args.split}: no training identities left in {args.dataset}")
    show = not args.no_progress
    data = cut_dataset(args.dataset, identities, config.net, config.frames_per_clip, progress=show)
    holdout = cut_dataset(args.dataset, held_out, config.net, 60, progress=show) if held_out else None
    log.info(f"{len(data)} mouths of {len(identities)} identities"
             + (f"; {len(holdout)} held out of {len(held_out)}" if holdout is not None else ""))
    train_mouth(data, config, args.out, holdout=holdout, progress=show, save_every=args.save_every, log=log.info,
                init=init, teacher=teacher)
    log.info(f"mouth model -> {args.out}")
    return 0
