"""`talkinghead animate`: make an avatar talk, driven by a video or a landmark track."""

from __future__ import annotations

import argparse

from talkinghead.errors import TalkingHeadError

EXAMPLES = """examples:
  talkinghead animate --avatar me.avatar --driving speech.mp4 -o out.mp4
  talkinghead animate --source mona_lisa.jpg --driving speech.mp4 -o mona.mp4 --side-by-side
  talkinghead animate --avatar me.avatar --landmarks track.npy --fps 25 -o puppet.mp4
  talkinghead animate --avatar me.avatar --driving me_talking.mp4 --absolute -o self.mp4
The driving video's audio is copied into the output. Relative mode (default) keeps the avatar's
face shape and transfers the driver's motion; --absolute uses the driver's landmarks as they are
(aligned), which suits self-reenactment.
"""


def add_parser(sub) -> None:
    p = sub.add_parser("animate", help="render an avatar driven by a video or landmarks",
                       description=__doc__, epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--avatar", help="avatar file made by `talkinghead finetune`")
    who.add_argument("--source", nargs="+", help="image(s) of the person: the avatar is built on the fly")
    drive = p.add_mutually_exclusive_group(required=True)
    drive.add_argument("--driving", help="driving video (its audio is kept)")
    drive.add_argument("--landmarks", help="(T, 68, 2) .npy landmark track (puppeteering)")
    p.add_argument("-o", "--output", required=True, help="output .mp4")
    p.add_argument("--checkpoint", default=None, help="meta checkpoint (with --source; default: bundled)")
    p.add_argument("--steps", type=int, default=None, help="fine-tuning steps with --source (0 = FF)")
    p.add_argument("--set", nargs="+", default=[], metavar="SECTION.FIELD=VALUE",
                   help="with --source: change the model's fine-tuning settings, e.g. train.finetune_jaw_drop=0")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--relative", dest="mode", action="store_const", const="relative",
                      help="avatar's face shape + driver's motion (default)")
    mode.add_argument("--absolute", dest="mode", action="store_const", const="absolute",
                      help="driver's landmarks, aligned to the avatar")
    p.set_defaults(mode="relative")
    p.add_argument("--reference", default="first",
                   help="driver's neutral frame for relative mode: 'first', 'best' (closest pose) or an index")
    p.add_argument("--no-smooth", action="store_true",
                   help="use the driving landmarks as detected (default: One-Euro smoothed against jitter)")
    p.add_argument("--side-by-side", action="store_true", help="driver | landmarks | result")
    p.add_argument("--paste-back", action="store_true", help="paste the rendered face into the full source image")
    p.add_argument("--fps", type=float, default=None, help="output fps (default: the driver's; 25 for .npy)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default=None)
    p.set_defaults(run=run)


def run(args) -> int:
    from pathlib import Path

    from talkinghead.infer.avatar import Avatar
    from talkinghead.infer.bundled import resolve_checkpoint
    from talkinghead.infer.driving import animate_to_video, track_from_npy, track_from_video

    if not args.output.lower().endswith(".mp4"):
        raise TalkingHeadError(f"{args.output}: output must be an .mp4 file")
    if args.avatar and args.set:
        raise TalkingHeadError("--set changes fine-tuning settings; it needs --source (an avatar file is already fine-tuned)")
    if args.avatar:
        avatar = Avatar.load(args.avatar, checkpoint=args.checkpoint, device=args.device)
    else:
        sources = args.source[0] if len(args.source) == 1 else args.source
        avatar = Avatar.from_images(sources, resolve_checkpoint(args.checkpoint), finetune_steps=args.steps,
                                    device=args.device, overrides=args.set)
    if args.driving:
        if not Path(args.driving).exists():
            raise TalkingHeadError(f"{args.driving}: driving video not found")
        track = track_from_video(args.driving)
    else:
        track = track_from_npy(args.landmarks, fps=args.fps or 25.0)
    reference = int(args.reference) if args.reference.isdigit() else args.reference
    if reference not in ("first", "best") and not isinstance(reference, int):
        raise TalkingHeadError(f"--reference {args.reference!r}: use 'first', 'best' or a frame index")
    summary = animate_to_video(avatar, track, args.output, mode=args.mode, reference=reference,
                               side_by_side=args.side_by_side, paste=args.paste_back,
                               batch_size=args.batch_size, fps=args.fps, smooth=not args.no_smooth)
    lost = f", face lost in {summary['lost']} frames (held)" if summary["lost"] else ""
    print(f"wrote {summary['output']}: {summary['frames']} frames at {summary['fps']:g} fps{lost}")
    return 0
