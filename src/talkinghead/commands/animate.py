"""`talkinghead animate`: make an avatar talk, driven by a video or a landmark track."""

from __future__ import annotations

import argparse

from talkinghead.commands.common import (add_expression_arguments, add_person_arguments, add_size_argument,
                                         add_smoothing_argument, expression_from_args)
from talkinghead.errors import TalkingHeadError
from talkinghead.validation import fps_type, int_in

EXAMPLES = """examples:
  talkinghead animate --avatar me.avatar --driving speech.mp4 -o out.mp4
  talkinghead animate --source mona_lisa.jpg --driving speech.mp4 -o mona.mp4 --side-by-side
  talkinghead animate --avatar me.avatar --landmarks track.npy --fps 25 -o puppet.mp4
  talkinghead animate --avatar me.avatar --driving me_talking.mp4 --absolute -o self.mp4
  talkinghead animate --avatar me.avatar --driving speech.mp4 --eyes 0 -o eyes_closed.mp4
  talkinghead animate --avatar me.avatar --driving speech.mp4 --size 512 --paste-back -o out.mp4
The driving video's audio is copied into the output. Relative mode (default) keeps the avatar's
face shape and transfers the driver's motion; --absolute uses the driver's landmarks as they are
(aligned), which suits self-reenactment.
"""


def add_parser(sub) -> None:
    p = sub.add_parser("animate", help="render an avatar driven by a video or landmarks",
                       description=__doc__, epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_person_arguments(p, "image(s) of the person: the avatar is built on the fly",
                         "meta checkpoint (with --source; default: bundled)")
    drive = p.add_mutually_exclusive_group(required=True)
    drive.add_argument("--driving", help="driving video (its audio is kept)")
    drive.add_argument("--landmarks", help="(T, 68, 2) .npy landmark track (puppeteering)")
    p.add_argument("-o", "--output", required=True, help="output .mp4")
    p.add_argument("--steps", type=int_in(0), default=None, help="fine-tuning steps with --source (0 = FF)")
    p.add_argument("--set", nargs="+", default=[], metavar="SECTION.FIELD=VALUE",
                   help="with --source: change the model's fine-tuning settings, e.g. train.finetune_jaw_drop=0")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--relative", dest="mode", action="store_const", const="relative",
                      help="avatar's face shape + driver's motion (default)")
    mode.add_argument("--absolute", dest="mode", action="store_const", const="absolute",
                      help="driver's landmarks, aligned to the avatar")
    p.set_defaults(mode="relative")
    p.add_argument("--reference", default="neutral",
                   help="driver's neutral frame for relative mode: 'neutral' (nearest the avatar's head "
                        "pose, mouth and eyelids aside; default), 'first', 'best' (closest pose) or an index")
    add_smoothing_argument(p)
    add_expression_arguments(p)
    p.add_argument("--side-by-side", action="store_true", help="driver | landmarks | result")
    p.add_argument("--paste-back", action="store_true", help="paste the rendered face into the full source image")
    add_size_argument(p)
    p.add_argument("--fps", type=fps_type, default=None, help="output fps (default: the driver's; 25 for .npy)")
    p.add_argument("--batch-size", type=int_in(1, 4096), default=16, help="frames rendered at once (default 16)")
    p.add_argument("--device", default=None)
    p.set_defaults(run=run)


def parse_reference(text: str) -> str | int:
    """--reference: 'neutral', 'first', 'best' or a non-negative frame index."""
    if text in ("neutral", "first", "best"):
        return text
    if text.isdigit():
        return int(text)
    raise TalkingHeadError(f"--reference {text!r}: use 'neutral', 'first', 'best' or a frame index (0, 1, ...)")


def run(args) -> int:
    from talkinghead.checkpoint import with_overrides
    from talkinghead.infer.avatar import Avatar
    from talkinghead.infer.bundled import resolve_checkpoint
    from talkinghead.infer.driving import animate_to_video, track_from_npy, track_from_video
    from talkinghead.checkpoint import load_checkpoint
    from talkinghead.validation import check_device, check_input_path, check_output_file

    # Every argument is checked before the slow parts (tracking, fine-tuning, rendering).
    check_output_file(args.output, (".mp4",))
    check_device(args.device)
    reference = parse_reference(args.reference)
    if args.avatar:
        check_input_path(args.avatar, "avatar file")
    if args.avatar and args.set:
        raise TalkingHeadError("--set changes fine-tuning settings; it needs --source (an avatar file is already fine-tuned)")
    if args.avatar and args.steps is not None:
        raise TalkingHeadError("--steps applies to --source (an avatar file is already fine-tuned)")
    if args.driving:
        from talkinghead.data.video import probe_video

        check_input_path(args.driving, "driving video")
        probe_video(args.driving)  # unreadable → one line now, not after fine-tuning
    else:
        check_input_path(args.landmarks, "landmark track")
        track = track_from_npy(args.landmarks, fps=args.fps or 25.0)  # cheap: read before the avatar
    if args.avatar:
        avatar = Avatar.load(args.avatar, checkpoint=args.checkpoint, device=args.device)
        if args.paste_back and avatar.source_image is None:
            raise TalkingHeadError(f"{args.avatar}: --paste-back needs an avatar made from images "
                                   "(this one has no source image)")
        ckpt = None
    else:
        for source in args.source:
            check_input_path(source, "source")
        ckpt = load_checkpoint(resolve_checkpoint(args.checkpoint))
        if args.set:
            ckpt = with_overrides(ckpt, args.set)
    if args.driving:
        track = track_from_video(args.driving)
    if isinstance(reference, int) and reference >= len(track.landmarks):
        source = args.driving or args.landmarks
        raise TalkingHeadError(f"--reference {reference}: {source} has {len(track.landmarks)} frames "
                               f"(0 to {len(track.landmarks) - 1})")
    if ckpt is not None:
        sources = args.source[0] if len(args.source) == 1 else args.source
        avatar = Avatar.from_images(sources, ckpt, finetune_steps=args.steps, device=args.device)
    summary = animate_to_video(avatar, track, args.output, mode=args.mode, reference=reference,
                               side_by_side=args.side_by_side, paste=args.paste_back,
                               batch_size=args.batch_size, fps=args.fps, smooth=not args.no_smooth,
                               expression=expression_from_args(args), size=args.size)
    lost = f", face lost in {summary['lost']} frames (held)" if summary["lost"] else ""
    print(f"wrote {summary['output']}: {summary['frames']} frames at {summary['fps']:g} fps{lost}")
    if summary["tracking"]:
        from talkinghead.data.tracking import describe_tracking

        print(describe_tracking(summary["tracking"]))
    return 0
