"""`talkinghead evaluate`: the paper's few-shot self-reenactment protocol on held-out identities,
reported like its Table 1 (SSIM, PSNR, CSIM, landmark NME; FID where weights exist)."""

from __future__ import annotations

import argparse

from talkinghead.validation import int_in

EXAMPLES = """examples:
  talkinghead evaluate --checkpoint runs/meta/latest.safetensors --data data/ --split-file faces -o report/
  talkinghead evaluate --checkpoint meta.safetensors --data data/ --split-file heldout.txt --shots 1 8 32 -o report/
The split is 'faces' (the bundled split of the shared faces data; its 'dev' identities are used),
a text file with one identity per line, or a JSON file with a "dev" list. Results are cached per
video in report/per_video/, so a second run resumes; a video that fails is skipped and listed.
"""


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="few-shot evaluation on held-out identities",
                       description=__doc__, epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="meta checkpoint (default: the bundled model)")
    p.add_argument("--data", required=True, help="data set prepared by `talkinghead prepare`")
    p.add_argument("--split-file", default="faces", help="held-out identities (see below)")
    p.add_argument("--shots", nargs="+", type=int_in(1, 1024), default=[1, 8, 32], help="K values (default: 1 8 32)")
    p.add_argument("--targets", type=int_in(1), default=8, help="target frames per video (default: 8)")
    p.add_argument("--steps", type=int_in(0), default=None, help="FT steps (default: the checkpoint's preset)")
    p.add_argument("-o", "--output", required=True, help="report folder")
    p.set_defaults(run=run)


def run(args) -> int:
    from talkinghead.errors import TalkingHeadError
    from talkinghead.eval.protocol import EvalSettings, run_evaluation
    from talkinghead.eval.splits import load_split
    from talkinghead.infer.bundled import resolve_checkpoint
    from talkinghead.validation import check_input_path, check_output_folder

    check_output_folder(args.output)
    check_input_path(args.data, "data set")
    split = load_split(args.split_file)
    identities = split.get("dev") or split.get("test")
    if not identities:
        raise TalkingHeadError(f"{args.split_file}: no held-out ('dev') identities in the split")
    if any(k < 1 for k in args.shots):
        raise TalkingHeadError("--shots must be positive")
    settings = EvalSettings(shots=tuple(args.shots), targets=args.targets, finetune_steps=args.steps)
    result = run_evaluation(resolve_checkpoint(args.checkpoint), args.data, identities, args.output, settings)
    from talkinghead.eval.report import markdown_table

    print(markdown_table(result["table"]))
    print(f"report: {result['report']}")
    return 0
