"""Build the data pack of benchmarks/gpu.sh: a 256-px meta-learning set from the shared faces data.

    python benchmarks/gpu_pack.py /work/shared/data/faces/manifest.csv --out packs/faces256

One clip (the first listed) of each of up to ``--identities`` training identities of the bundled
split (``split_faces.json``; held-out identities never enter) whose smaller side is at least 256
px, ``--max-frames`` frames each, prepared at 256 px by ``talkinghead prepare``. The defaults
give about 30 MB; the script fails if the pack is over ``--max-mb``. The pack is not committed:
build it where the shared data is, and carry it to the GPU machine (benchmarks/gpu.sh --pack).
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path


def pack_manifest(manifest: Path, identities: int, min_side: int) -> list[dict]:
    from talkinghead.eval.splits import load_split

    train = set(load_split("faces")["train"])
    rows, seen = [], set()
    with open(manifest, newline="") as f:
        for row in csv.DictReader(f):
            if row.get("kind") != "video" or row["identity"] not in train or row["identity"] in seen:
                continue
            if min(int(row["width"]), int(row["height"])) < min_side:
                continue
            seen.add(row["identity"])
            rows.append({"identity": row["identity"], "path": str(manifest.parent / row["path"]), "kind": "video"})
            if len(rows) == identities:
                break
    return rows


def folder_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifest", type=Path, help="the shared faces data's manifest.csv")
    ap.add_argument("--out", type=Path, required=True, help="pack folder (a prepared data set)")
    ap.add_argument("--identities", type=int, default=32)
    ap.add_argument("--max-frames", type=int, default=48)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--max-mb", type=float, default=50.0)
    args = ap.parse_args()
    from talkinghead.cli import main as cli

    rows = pack_manifest(args.manifest, args.identities, args.size)
    if not rows:
        print(f"error: {args.manifest}: no training clip of {args.size} px or more", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        listing = Path(tmp) / "pack.csv"
        with open(listing, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["identity", "path", "kind"])
            writer.writeheader()
            writer.writerows(rows)
        rc = cli(["prepare", str(listing), "--out", str(args.out), "--size", str(args.size),
                  "--max-frames", str(args.max_frames), "--check-frames", "0"])
    if rc != 0:
        return rc
    mb = folder_mb(args.out)
    print(f"{args.out}: {len(rows)} clips, {mb:.1f} MB")
    if mb > args.max_mb:
        print(f"error: {args.out}: {mb:.1f} MB is over --max-mb {args.max_mb:g}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
