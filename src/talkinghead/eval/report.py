"""Evaluation report: a Markdown table laid out like the paper's Table 1 (method × shots ×
metric), a CSV of the same numbers, and a picture grid (source | target | methods)."""

from __future__ import annotations

import csv
import io
import math
from datetime import date
from pathlib import Path

import numpy as np

from talkinghead.fileio import atomic_path, atomic_write_text

METRICS = (("ssim", "SSIM ↑"), ("psnr", "PSNR ↑"), ("csim", "CSIM ↑"), ("nme", "NME ↓"),
           ("face_found", "face found ↑"), ("sharpness", "sharpness →1"), ("jitter", "jitter ↓"))


def _mean(values: list[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def aggregate(rows: list[dict]) -> list[dict]:
    """Mean of every metric over all targets of all videos, per (K, method)."""
    table = []
    for k in sorted({r["shots"] for r in rows}):
        group = [r for r in rows if r["shots"] == k]
        methods = list(group[0]["metrics"])
        for method in methods:
            entry = {"shots": k, "method": method, "videos": len(group),
                     "targets": sum(len(r["metrics"][method]["ssim"]) for r in group)}
            if method == "FT":
                entry["method"] = f"FT ({group[0]['ft_steps']} steps)"
            for key, _ in METRICS:  # older results lack the newer metrics: n/a
                entry[key] = _mean([v for r in group for v in r["metrics"][method].get(key, [])])
            # NME averages only frames where landmarks could be found; say on how many.
            entry["nme_frames"] = sum(1 for r in group for v in r["metrics"][method]["nme"] if math.isfinite(v))
            table.append(entry)
    return table


def markdown_table(table: list[dict]) -> str:
    """One row per (K, method); an FID column only when some row has an FID."""
    with_fid = any("fid" in e for e in table)
    head = ("| K | method | " + " | ".join(label for _, label in METRICS) + (" | FID ↓" if with_fid else "")
            + " | videos | targets |")
    lines = [head, "|---:|---|" + "---:|" * (len(METRICS) + 2 + with_fid)]
    for e in table:
        cells = []
        for key, _ in METRICS:
            v = e[key]
            cells.append("n/a" if not math.isfinite(v) else
                         (f"{100 * v:.0f}%" if key == "face_found" else f"{v:.2f}" if key in ("psnr", "sharpness", "jitter")
                          else f"{v:.3f}"))
        if with_fid:
            cells.append(f"{e['fid']:.1f}" if "fid" in e else "n/a")
        lines.append(f"| {e['shots']} | {e['method']} | " + " | ".join(cells) + f" | {e['videos']} | {e['targets']} |")
    return "\n".join(lines)


def describe_checkpoint(checkpoint) -> str:
    """File name, step and SHA-256 prefix of a loaded :class:`Checkpoint`, for the report's
    ``Checkpoint:`` line: names the exact model without this machine's paths."""
    from talkinghead.checkpoint import file_sha256

    return f"`{checkpoint.path.name}` (step {checkpoint.step}, SHA-256 {file_sha256(checkpoint.path)[:12]})"


def write_report(rows: list[dict], examples: list[np.ndarray], out: Path, checkpoint: str,
                 failures: list[str], fid_note: str | None = None,
                 fid: dict[tuple[int, str], float] | None = None) -> dict:
    """``checkpoint``: the model as :func:`describe_checkpoint` names it. ``fid``: FID per
    (K, method) where it was computed; ``fid_note`` says how, or why not."""
    from PIL import Image

    from talkinghead.eval.fid import fid_available
    from talkinghead.eval.metrics import LANDMARK_SIZE
    from talkinghead.eval.protocol import JITTER_FRAMES

    table = aggregate(rows)
    for entry in table:
        key = (entry["shots"], entry["method"].split(" (")[0])
        if fid and key in fid:
            entry["fid"] = fid[key]
    available, reason = fid_available()
    fid_line = fid_note or (f"FID: {reason}" if not available else
                            "FID: not computed in this run (the Inception weights were found, but no FID was passed).")
    identities = sorted({r["identity"] for r in rows})
    md = [
        "# Few-shot self-reenactment on held-out identities",
        "",
        f"Checkpoint: {checkpoint}  ",
        f"Identities ({len(identities)}): {', '.join(identities)}  ",
        f"Date: {date.today().isoformat()}",
        "",
        markdown_table(table),
        "",
        "SSIM/PSNR: on the face crop vs the real target frame. CSIM: cosine similarity of dlib's "
        "128-d face-recognition embeddings of generated and real frames (the paper used another "
        "face network, so absolute values are not comparable with its Table 1); a generated frame in "
        "which dlib finds no face scores 0. For scale: two different people score about 0.75 with "
        "this network, the same person in two frames of a clip above 0.9. NME: landmarks "
        f"dlib finds on the generated frame (enlarged to {LANDMARK_SIZE} px for precision) vs the driving landmarks, divided by the inter-ocular "
        "distance, over frames where landmarks were found. Face found: fraction of generated frames "
        "in which dlib's face detector finds a face. Nearest source: the few-shot frame closest in "
        "landmarks to the target, returned unchanged (perfect identity, blind to motion). Warp: that "
        "shot warped onto the target's landmarks (piecewise-affine over a landmark triangulation, "
        "background rigid, what the shot hides mirrored from what it shows), no learning. "
        "Sharpness: variance of the Laplacian over the target's face box, generated ÷ real, both "
        "resampled to 96 px (1 = as sharp as the real frame). Jitter: mean "
        f"frame-to-frame acceleration of the landmarks dlib finds on {JITTER_FRAMES} consecutive rendered frames "
        "(driving landmarks One-Euro smoothed, as `animate` does), ÷ that of the real frames' "
        "landmarks (1 = moves as jerkily as the real video; dlib's own detection noise is included: "
        "the real frames themselves measure 0.77 this way).",
        "",
        fid_line,
    ]
    if examples:
        md += ["", "![source | target | nearest source | warp | FF | FT](grid.png)"]
    if failures:
        md += ["", "Skipped:", *[f"- {f}" for f in failures]]
    atomic_write_text(out / "report.md", "\n".join(md) + "\n")
    buf = io.StringIO()
    fields = ["shots", "method", *[k for k, _ in METRICS], *(["fid"] if any("fid" in e for e in table) else []),
              "nme_frames", "videos", "targets"]
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    for e in table:
        writer.writerow({k: e.get(k, "") for k in fields})
    atomic_write_text(out / "results.csv", buf.getvalue())
    if examples:
        with atomic_path(out / "grid.png") as tmp:
            Image.fromarray(np.concatenate(examples, axis=0)).save(tmp)  # rows: source|target|methods
    return {"table": table, "report": out / "report.md", "csv": out / "results.csv",
            "grid": out / "grid.png" if examples else None}
