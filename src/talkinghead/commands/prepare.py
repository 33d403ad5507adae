"""`talkinghead prepare`: turn talking-head videos into a training data set (face crops +
68 landmarks per frame), or merge prepared shards. See docs/data-format.md."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from talkinghead.errors import TalkingHeadError
from talkinghead.validation import float_in, int_in

DESCRIPTION = """\
Detect and track 68 face landmarks through videos, cut a steady square head crop per frame
(VoxCeleb2 framing) and store crops + landmarks, one file per clip, in DATASET.

Sources: video files (.mp4 .mov .avi .webm .mkv .m4v), folders of frames, folders of videos
(VoxCeleb2's <identity>/<video>/<clip>.mp4 layout gives identities), or a CSV manifest with
identity,path[,kind] columns. Clips already in DATASET are skipped (resumable) unless
--overwrite. Clips without a face, unreadable, or with too few face frames are skipped and
listed; the run still succeeds.

exit status: 0 ok, 2 bad input (no sources, --out not writable, bad --shard, or a clip that
             cannot be written there, e.g. a full disk: the run stops without writing the index;
             clips finished before are kept and a rerun resumes), 3 no clip produced any data
"""

EPILOG = """examples:
  talkinghead prepare videos/ --out data/ --preview
  talkinghead prepare vox2/dev/mp4 --out data/ --shard 3/8      # one of 8 machines
  talkinghead prepare --merge data/ shard2/ shard3/            # merge shards into data/
"""


def add_parser(sub) -> None:
    p = sub.add_parser("prepare", help="videos -> data set of face crops + landmarks",
                       description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="*", metavar="SRC", help="video files, frame folders, folders of videos, CSV manifests")
    p.add_argument("--out", "-o", metavar="DATASET", help="output data set folder (created)")
    p.add_argument("--size", type=int_in(16, 4096), default=256, help="crop side in pixels (default 256)")
    p.add_argument("--shard", metavar="I/N", help="process only every N-th clip, starting at the I-th (1-based)")
    p.add_argument("--workers", type=int_in(1), default=None,
                   help=f"parallel processes (default: all cores, here {os.cpu_count()})")
    p.add_argument("--overwrite", action="store_true", help="redo clips that are already prepared")
    p.add_argument("--preview", action="store_true", help="write DATASET/preview.png: crops with landmarks")
    p.add_argument("--detector", default="dlib", help="dlib (default), dlib-cnn or face_alignment")
    p.add_argument("--min-valid", type=float_in(0.0, 1.0), default=0.5,
                   help="skip clips with a face in fewer than this fraction of frames (default 0.5)")
    p.add_argument("--max-frames", type=int_in(1), default=None, metavar="N", help="use at most N frames per clip")
    p.add_argument("--check-frames", type=int_in(0, 1000), default=4, metavar="N",
                   help="frames per clip on which the track is checked against a fresh detection, "
                        "for the index (default 4; 0: no check)")
    p.add_argument("--merge", nargs="+", metavar="DATASET",
                   help="rebuild DATASET's index; clips of further DATASETs are merged into the first")
    p.set_defaults(run=run)


def run(args) -> int:
    from talkinghead.data.prepare import PrepareOptions, merge_datasets, prepare_dataset

    if args.merge:
        if args.sources or args.out:
            raise TalkingHeadError("--merge takes data set folders only (no SRC or --out)")
        target, others = args.merge[0], args.merge[1:]
        index, added = merge_datasets(target, others)
        print(f"merged {added} clip files into {target}" if others else f"rebuilt index of {target}")
        print(f"index: {len(index['clips'])} clips, {index['identities']} identities, "
              f"{index['valid_frames']} valid frames -> {Path(target) / 'index.json'}")
        if index["unreadable"]:
            print(f"unreadable clip files (left out): {', '.join(index['unreadable'])}")
        return 0
    if not args.out:
        raise TalkingHeadError("--out DATASET is required (or use --merge DATASET ...)")
    if not args.sources:
        raise TalkingHeadError("no sources given: name video files, folders or a CSV manifest")
    if args.workers is not None and args.workers < 1:
        raise TalkingHeadError(f"--workers {args.workers}: must be at least 1")
    if args.max_frames is not None and args.max_frames < 1:
        raise TalkingHeadError(f"--max-frames {args.max_frames}: must be at least 1")
    options = PrepareOptions(size=args.size, min_valid=args.min_valid, max_frames=args.max_frames,
                             detector=args.detector, preview=args.preview, check_frames=args.check_frames)
    # Fail early, in the parent, on an unknown or unavailable detector rather than per clip.
    from talkinghead.data.landmarks import get_detector

    get_detector(args.detector)
    summary = prepare_dataset(args.sources, args.out, options, workers=args.workers, shard=args.shard,
                              overwrite=args.overwrite)
    for line in summary.lines(Path(args.out)):
        print(line)
    if args.preview and (Path(args.out) / "preview.png").is_file():
        print(f"preview: {Path(args.out) / 'preview.png'}")
    if not summary.done and not summary.already:
        import sys

        first = summary.skipped[0] if summary.skipped else None
        where = f"{first.source or first.clip}: {first.reason}" if first else "no clip"
        more = f" (and {len(summary.skipped) - 1} more skipped clip(s), listed above)" if len(summary.skipped) > 1 else ""
        print(f"error: {where}; no clip produced any data{more}", file=sys.stderr)
        return 3
    return 0
