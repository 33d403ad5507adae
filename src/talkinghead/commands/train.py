"""`talkinghead train`: meta-learning (paper stage 1) on a prepared data set."""

from __future__ import annotations

import argparse
import logging
import sys

from talkinghead.errors import TalkingHeadError
from talkinghead.validation import float_in, int_in

log = logging.getLogger(__name__)

EXAMPLES = """examples:
  talkinghead train data/ --preset small --out runs/meta
  talkinghead train data/ --out runs/meta --resume                 # continue where it stopped
  talkinghead train data/ --out runs/meta --resume --set train.lr_generator=2e-5  # new rates apply
  talkinghead train data/ --out runs/v2 --init-from runs/meta/latest.safetensors --init-networks G D
  talkinghead train data/ --preset tiny --set train.steps=500 train.batch_size=4
  torchrun --nproc_per_node=8 -m talkinghead.cli train data/ --preset paper --out runs/paper
"""


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="meta-learn E, G and D on a prepared data set",
                       description=__doc__, epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", help="folder written by `talkinghead prepare`")
    p.add_argument("--out", required=True, help="run folder: checkpoints/, tb/ (TensorBoard), samples/")
    p.add_argument("--preset", default=None,
                   help="tiny | small | paper (default: small); a resumed or --init-from run keeps its checkpoint's")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="CHECKPOINT",
                   help="continue from RUN/latest.safetensors, or from the given checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run in an --out folder that already holds one (its checkpoints are deleted)")
    p.add_argument("--allow-pixel-loss", action="store_true",
                   help="train without VGG19 weights (pixel-L1 stand-in) even where the preset requires them")
    p.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                   help="start a new run from this checkpoint's weights and settings (fresh optimisers, "
                        "step 0; --set still applies)")
    p.add_argument("--init-networks", nargs="+", default=["E", "G", "D"], metavar="NET",
                   help="with --init-from: which networks to take (default: E G D; the rest start fresh)")
    p.add_argument("--steps", type=int_in(1), help="total optimiser steps (overrides the preset)")
    p.add_argument("--batch-size", type=int_in(1), help="episodes per step and process")
    p.add_argument("--shots", type=int_in(1), help="K frames per episode")
    p.add_argument("--split", default=None,
                   help="train only on the 'train' identities of a split: 'faces' (bundled) or a file")
    p.add_argument("--set", nargs="*", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override any config field, e.g. train.lr_generator=1e-4 model.embed_dim=256")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--max-minutes", type=float_in(0.0, lo_open=True), default=None,
                   help="stop cleanly (with a checkpoint) after this much wall time. Ctrl-C and SIGTERM "
                        "also stop at a step boundary with a checkpoint (exit 130 / 143)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def resolve_config(args):
    from talkinghead.config import get_preset
    from talkinghead.checkpoint import load_checkpoint
    from talkinghead.train.meta import latest_checkpoint

    overrides = list(args.set)
    for flag, key in (("steps", "train.steps"), ("batch_size", "train.batch_size"), ("shots", "train.shots")):
        if getattr(args, flag) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    if args.resume and args.init_from:
        raise TalkingHeadError("--resume continues a run, --init-from starts a new one: use one of them")
    resume_path = latest_checkpoint(args.out) if args.resume is True else args.resume
    if args.resume is True and resume_path is None:
        raise TalkingHeadError(f"{args.out}: nothing to resume (no latest.safetensors)")
    if resume_path:
        ckpt = load_checkpoint(resume_path)
        if not ckpt.has("optim"):
            raise TalkingHeadError(f"{resume_path}: has no optimiser state (an exported model?), so it cannot be "
                                   f"resumed; start a new run from its weights with --init-from {resume_path}")
        base = ckpt.config  # the run's own settings win over --preset
    elif args.init_from:
        base = load_checkpoint(args.init_from).config  # the weights fix the model settings
    else:
        base = get_preset(args.preset or "small")
    if args.preset and (resume_path or args.init_from) and args.preset != base.preset:
        source = resume_path or args.init_from
        raise TalkingHeadError(f"--preset {args.preset}: {source} is a {base.preset!r} model and its settings are "
                               "kept; leave out --preset (change single fields with --set)")
    return base.override(overrides), resume_path


def run(args) -> int:
    from talkinghead.train.meta import train_meta
    from talkinghead.validation import check_device, check_input_path
    from talkinghead.train.trainer import TrainingStopped

    check_input_path(args.dataset, "data set")
    check_device(args.device)
    config, resume_path = resolve_config(args)
    identities = None
    if args.split:
        from talkinghead.data.store import clip_rows, load_index
        from talkinghead.eval.splits import load_split, train_identities

        # A text split lists only held-out identities: train on everything else.
        available = {row.identity for row in clip_rows(load_index(args.dataset))}
        identities = train_identities(load_split(args.split), available)
        if not identities:
            raise TalkingHeadError(f"{args.split}: no training identities left in {args.dataset}")
    try:
        final = train_meta(args.dataset, args.out, config, resume=resume_path, identities=identities,
                           device=args.device, time_limit_s=args.max_minutes * 60 if args.max_minutes else None,
                           progress=not args.no_progress, init_from=args.init_from,
                           init_networks=tuple(args.init_networks), overwrite=args.overwrite,
                           allow_pixel_loss=args.allow_pixel_loss)
    except TrainingStopped as stopped:
        print(f"{stopped}", file=sys.stderr)
        print(f"checkpoint: {stopped.checkpoint}")
        return stopped.exit_code
    print(f"checkpoint: {final}")
    return 0
