"""`talkinghead demo`: build an avatar from a bundled portrait and make it talk, offline."""

from __future__ import annotations

import argparse

from talkinghead.validation import int_in

EXAMPLES = """examples:
  talkinghead demo                                   # writes ./demo.mp4 and ./demo.png
  talkinghead demo --out results/
  talkinghead demo --source me.jpg --driving speech.mp4
"""


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="animate a bundled portrait with the bundled model",
                       description=__doc__, epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=".", help="folder for demo.mp4 and demo.png (default: here)")
    p.add_argument("--source", default=None, help="your own portrait (default: scikit-image's astronaut)")
    p.add_argument("--driving", default=None, help="your own driving video (default: bundled landmark track)")
    p.add_argument("--checkpoint", default=None, help="meta checkpoint (default: the bundled model)")
    p.add_argument("--steps", type=int_in(0), default=None, help="fine-tuning steps (default: the model's preset)")
    p.add_argument("--frames", type=int_in(1), default=None, help="render at most this many frames")
    p.add_argument("--set", nargs="+", default=[], metavar="SECTION.FIELD=VALUE",
                   help="change the model's fine-tuning settings, e.g. train.finetune_jaw_drop=0")
    from talkinghead.commands.common import add_size_argument

    add_size_argument(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from talkinghead.eval.selfcheck import check_rendering
    from talkinghead.infer.demo import run_demo
    from talkinghead.validation import check_input_path, check_output_folder

    check_output_folder(args.out)
    if args.source is not None:
        check_input_path(args.source, "source image")
    if args.driving is not None:
        check_input_path(args.driving, "driving video")

    r = run_demo(args.out, source=args.source, driving=args.driving, checkpoint=args.checkpoint,
                 steps=args.steps, max_frames=args.frames, overrides=args.set, size=args.size)
    check = check_rendering(r.rendered, r.driving)
    print(f"video: {r.video}")
    print(f"frames: {r.strip}")
    print(f"{r.frames} frames in {r.seconds:.0f} s; self-check: face found in {100 * check.face_found:.0f}% "
          f"of frames, landmark NME vs driving {check.nme:.3f}, "
          f"mouth-opening correlation {check.mouth_correlation:.2f}")
    return 0
