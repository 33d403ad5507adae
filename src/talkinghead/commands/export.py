"""`talkinghead export`: a small, shippable model file from a training checkpoint (fp16 E, G and D;
no optimizer state, no per-video discriminator rows), optionally with new fine-tuning defaults."""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  talkinghead export runs/meta/latest.safetensors -o model.safetensors
  talkinghead export runs/meta/latest.safetensors -o model.safetensors \\
      --set train.finetune_steps=200 train.finetune_adversarial=false
  talkinghead export --onnx me.avatar -o me.onnx     # an avatar's renderer for any ONNX runtime
  talkinghead export --onnx me.avatar -o me512.onnx --size 512   # rendering at 512 px
"""


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="a shippable model file from a training checkpoint",
                       description=__doc__, epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="training checkpoint (RUN/latest.safetensors)")
    p.add_argument("-o", "--output", required=True, help="model file to write")
    p.add_argument("--fp32", action="store_true", help="keep fp32 weights (default: fp16, half the size)")
    p.add_argument("--set", nargs="+", default=[], metavar="SECTION.FIELD=VALUE",
                   help="change stored defaults, e.g. train.finetune_steps=200")
    p.add_argument("--onnx", action="store_true",
                   help="export an avatar file's renderer (G with its ψ) to ONNX, checked against PyTorch "
                        "with onnxruntime (needs the [app] extra)")
    from talkinghead.commands.common import add_size_argument

    add_size_argument(p)
    p.set_defaults(run=run)


def run(args) -> int:
    if args.size is not None and not args.onnx:
        from talkinghead.errors import TalkingHeadError

        raise TalkingHeadError("--size applies to --onnx (an avatar's renderer), not to checkpoint export")
    if args.onnx:
        from talkinghead.infer.onnx_export import run_onnx_export

        return run_onnx_export(args)
    from talkinghead.checkpoint import export_checkpoint, load_checkpoint
    from talkinghead.validation import check_input_path, check_output_file

    check_input_path(args.checkpoint, "checkpoint")
    check_output_file(args.output)

    path = export_checkpoint(args.checkpoint, args.output, half=not args.fp32, overrides=args.set)
    ckpt = load_checkpoint(path)
    print(f"{path}: step {ckpt.step}, preset {ckpt.config.preset}, {path.stat().st_size / 2**20:.1f} MB")
    return 0
