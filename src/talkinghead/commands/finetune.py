"""`talkinghead finetune`: build a person's avatar from a few photos, a painting or a video
(paper stage 2). ``--steps 0`` gives the feed-forward (FF) avatar."""

from __future__ import annotations

import argparse

from talkinghead.validation import int_in

EXAMPLES = """examples:
  talkinghead finetune photo.jpg --checkpoint meta.safetensors -o me.avatar
  talkinghead finetune a.jpg b.jpg c.jpg --checkpoint meta.safetensors --steps 100 -o me.avatar
  talkinghead finetune talk.mp4 --shots 8 --checkpoint meta.safetensors -o me.avatar
  talkinghead finetune mona_lisa.jpg --steps 0 -o mona_ff.avatar           # feed-forward, no fine-tuning
"""


def add_parser(sub) -> None:
    p = sub.add_parser("finetune", help="make an avatar from a few images or a video",
                       description=__doc__, epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="+", help="images of one person, or one video / frame folder")
    p.add_argument("--checkpoint", default=None,
                   help="meta-learned checkpoint (default: the bundled model)")
    p.add_argument("--shots", type=int_in(1, 1024), default=None, help="K: frames to use (default: all images, 8 from a video)")
    p.add_argument("--steps", type=int_in(0), default=None,
                   help="fine-tuning steps (default: the checkpoint's preset; 0 = feed-forward)")
    p.add_argument("-o", "--output", required=True, help="avatar file to write (.avatar)")
    p.add_argument("--device", default=None, help="cpu or cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", nargs="+", default=[], metavar="SECTION.FIELD=VALUE",
                   help="change the model's fine-tuning settings, e.g. train.finetune_jaw_drop=0")
    p.set_defaults(run=run)


def describe_finetuning(shots: int, history: list[float]) -> str:
    """"1 shot, 40 steps, content loss 0.90 -> 0.85 (...)": the loss as the mean of the first and
    the last fifth of the steps, since each step sees the shots randomly warped (one step's loss is noisy)."""
    what = f"{shots} shot{'s' if shots != 1 else ''}, {len(history)} step{'s' if len(history) != 1 else ''}"
    if not history:
        return f"{shots} shot{'s' if shots != 1 else ''}, feed-forward (no fine-tuning)"
    n = max(1, len(history) // 5)
    first, last = sum(history[:n]) / n, sum(history[-n:]) / n
    text = f"{what}, content loss {first:.3f} -> {last:.3f} (mean of the first and last {n} steps)"
    if last > first:
        text += ("; it can rise: each step renders randomly warped shots, and a few steps move G "
                 "little from the meta-learned model, which already fits them")
    return text


def run(args) -> int:
    from talkinghead.checkpoint import with_overrides
    from talkinghead.infer.avatar import Avatar
    from talkinghead.infer.bundled import resolve_checkpoint
    from talkinghead.checkpoint import load_checkpoint
    from talkinghead.validation import check_device, check_input_path, check_output_file

    # Everything is checked before face detection and fine-tuning.
    check_output_file(args.output)
    check_device(args.device)
    ckpt = load_checkpoint(resolve_checkpoint(args.checkpoint))
    if args.set:
        ckpt = with_overrides(ckpt, args.set)
    for source in args.sources:
        check_input_path(source, "source")
    sources = args.sources[0] if len(args.sources) == 1 else args.sources
    avatar = Avatar.from_images(sources, ckpt, shots=args.shots, finetune_steps=args.steps,
                                device=args.device, seed=args.seed)
    path = avatar.save(args.output)
    print(f"avatar: {path} ({describe_finetuning(avatar.shots, avatar.finetune_history)})")
    return 0
