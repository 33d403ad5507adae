"""`talkinghead evaluate` end to end: real CLI, a real held-out clip, the tiny preset."""

import csv
import json

import pytest

from talkinghead.cli import main
from talkinghead.config import get_preset
from talkinghead.train.meta import train_meta


@pytest.fixture(scope="module")
def real_dev_data(rendered_driver, tmp_path_factory):
    """A held-out clip: the bundled model's talking astronaut (48 frames), prepared at 64 px."""
    out = tmp_path_factory.mktemp("dev64")
    rc = main(["prepare", str(rendered_driver), "--out", str(out), "--size", "64", "--max-frames", "60"])
    assert rc == 0
    return out


def test_evaluate_writes_table_csv_grid_and_resumes(real_dev_data, synthetic_dataset, tmp_path, capsys):
    cfg = get_preset("tiny").override(["train.steps=2"])
    ckpt = train_meta(synthetic_dataset, tmp_path / "meta", cfg, progress=False)
    split = tmp_path / "heldout.txt"
    split.write_text("driver\n")
    report = tmp_path / "report"
    args = ["evaluate", "--checkpoint", str(ckpt), "--data", str(real_dev_data), "--split-file", str(split),
            "--shots", "1", "4", "--targets", "3", "--steps", "2", "-o", str(report)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "nearest source" in printed and "FT (2 steps)" in printed
    with open(report / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["shots"], r["method"]) for r in rows] == [
        ("1", "nearest source"), ("1", "warp"), ("1", "FF"), ("1", "FT (2 steps)"),
        ("4", "nearest source"), ("4", "warp"), ("4", "FF"), ("4", "FT (2 steps)")]
    baseline, warped = rows[4], rows[5]
    # the baselines return (warped) real frames of the same person: identity is near-perfect
    assert float(baseline["csim"]) > 0.85 and float(baseline["face_found"]) == 1.0
    assert float(warped["csim"]) > 0.85 and float(warped["face_found"]) == 1.0
    # the warp follows the target's landmarks better than the unmoved nearest shot, stays sharp
    assert float(warped["nme"]) < float(baseline["nme"])
    assert 0.5 < float(warped["sharpness"]) < 1.5
    assert baseline["jitter"] in ("", "nan") and float(warped["jitter"]) > 0  # no jitter for still shots
    assert all(-1 <= float(r["ssim"]) <= 1 for r in rows)  # SSIM can be negative for noise
    assert (report / "grid.png").is_file() and "grid.png" in (report / "report.md").read_text()
    # the report names the exact model (file, step, hash), not this machine's path to it
    assert f"Checkpoint: `{ckpt.name}` (step 2, SHA-256 " in (report / "report.md").read_text()
    assert len(list((report / "per_video").glob("*.json"))) == 2
    # resumable: a second run reuses the per-video results
    stamp = {p: p.stat().st_mtime_ns for p in (report / "per_video").glob("*.json")}
    assert main(args) == 0
    assert stamp == {p: p.stat().st_mtime_ns for p in (report / "per_video").glob("*.json")}
    result = json.loads(next((report / "per_video").glob("*K4.json")).read_text())
    assert len(result["metrics"]["FT"]["ssim"]) == 3
    # ... but never another checkpoint's: a new model (or new FT steps) into the same folder recomputes
    other = train_meta(synthetic_dataset, tmp_path / "meta2", get_preset("tiny").override(["train.steps=3"]),
                       progress=False)
    assert main([*args[:2], str(other), *args[3:]]) == 0
    assert all(stamp[p] != p.stat().st_mtime_ns for p in stamp)
    assert "(step 3, SHA-256" in (report / "report.md").read_text()
    stamp = {p: p.stat().st_mtime_ns for p in stamp}
    steps_at = args.index("--steps") + 1
    assert main([*args[:2], str(other), *args[3:steps_at], "3", *args[steps_at + 1:]]) == 0
    assert "FT (3 steps)" in capsys.readouterr().out
    assert all(stamp[p] != p.stat().st_mtime_ns for p in stamp)


def test_evaluate_reports_unusable_videos(real_dev_data, synthetic_dataset, tmp_path, capsys):
    ckpt = train_meta(synthetic_dataset, tmp_path / "meta", get_preset("tiny").override(["train.steps=1"]),
                      progress=False)
    split = tmp_path / "heldout.txt"
    split.write_text("driver\n")
    rc = main(["evaluate", "--checkpoint", str(ckpt), "--data", str(real_dev_data), "--split-file", str(split),
               "--shots", "500", "-o", str(tmp_path / "r")])
    assert rc == 2 and "too few for K=500" in capsys.readouterr().err
