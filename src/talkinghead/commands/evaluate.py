"""`talkinghead evaluate`: the paper's few-shot self-reenactment protocol on held-out identities,
reported like its Table 1 (SSIM, PSNR, CSIM, landmark NME; FID where weights exist); with
``--native``, self-reenactment at the clips' own resolution through ``animate --paste-back``
against the classical warp (:mod:`talkinghead.eval.native`)."""

from __future__ import annotations

import argparse

from talkinghead.validation import int_in

EXAMPLES = """examples:
  talkinghead evaluate --checkpoint runs/meta/latest.safetensors --data data/ --split-file faces -o report/
  talkinghead evaluate --checkpoint meta.safetensors --data data/ --split-file heldout.txt --shots 1 8 32 -o report/
The split is 'faces' (the bundled split of the shared faces data; its 'dev' identities are used),
a text file with one identity per line, or a JSON file with a "dev" list. Results are cached per
video in report/per_video/, so a second run resumes; a video that fails is skipped and listed.

  talkinghead evaluate --native /work/shared/data/faces/manifest.csv --shots 1 8 -o report/
--native MANIFEST: the held-out identities' clips of 256 px or more listed in MANIFEST (a faces
data manifest.csv); the first frame (and K - 1 later frames) are the shots, the next --targets
frames (default 24) drive `animate --absolute --paste-back`; PSNR, SSIM and sharpness in the face
box at the clip's resolution, with the classical warp in the same run (report/native.md).
"""


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="few-shot evaluation on held-out identities",
                       description=__doc__, epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="meta checkpoint (default: the bundled model)")
    p.add_argument("--data", default=None, help="data set prepared by `talkinghead prepare` (not with --native)")
    p.add_argument("--native", default=None, metavar="MANIFEST",
                   help="evaluate at native resolution on the clips of a faces manifest.csv (see below)")
    p.add_argument("--split-file", default="faces", help="held-out identities (see below)")
    p.add_argument("--shots", nargs="+", type=int_in(1, 1024), default=None,
                   help="K values (default: 1 8 32; with --native 1 8)")
    p.add_argument("--targets", type=int_in(1), default=None,
                   help="target frames per video (default: 8; with --native 24)")
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
    if (args.data is None) == (args.native is None):
        raise TalkingHeadError("give --data (a prepared data set) or --native (a faces manifest.csv), not both")
    check_input_path(args.data or args.native, "data set" if args.data else "manifest")
    split = load_split(args.split_file)
    identities = split.get("dev") or split.get("test")
    if not identities:
        raise TalkingHeadError(f"{args.split_file}: no held-out ('dev') identities in the split")
    if args.native:
        return _run_native(args, identities)
    settings = EvalSettings(shots=tuple(args.shots or (1, 8, 32)), targets=args.targets or 8,
                            finetune_steps=args.steps)
    result = run_evaluation(resolve_checkpoint(args.checkpoint), args.data, identities, args.output, settings)
    from talkinghead.eval.report import markdown_table

    print(markdown_table(result["table"]))
    print(f"report: {result['report']}")
    return 0


def _run_native(args, identities) -> int:
    from talkinghead.eval.native import NativeSettings, run_native_evaluation
    from talkinghead.infer.bundled import resolve_checkpoint

    settings = NativeSettings(shots=tuple(args.shots or (1, 8)), frames=args.targets or NativeSettings.frames,
                              finetune_steps=args.steps)
    result = run_native_evaluation(resolve_checkpoint(args.checkpoint), args.native, identities, args.output,
                                   settings)
    print(result["markdown"])
    for line in result["failed"]:
        print(f"skipped: {line}")
    print(f"report: {result['report']}")
    return 0
