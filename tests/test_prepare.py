"""`talkinghead prepare`: source discovery, the per-clip pipeline, resumability, shards, merge,
errors and exit codes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from talkinghead.cli import main
from talkinghead.data.prepare import discover_sources, parse_shard, select_shard
from talkinghead.data.store import ClipReader, load_index
from talkinghead.errors import TalkingHeadError


@pytest.fixture(scope="module")
def sources(shipped_clips, tmp_path_factory) -> list[str]:
    """A tight 256 clip, a wide 640×360 clip, a folder of frames (the bundled model's talking
    astronaut), and a fake video."""
    fake = tmp_path_factory.mktemp("bad") / "broken.mp4"
    fake.write_text("not a video")
    return [str(shipped_clips["tight"]), str(shipped_clips["wide"]), str(shipped_clips["frames"]), str(fake)]


NAMES = ["driver", "frames", "wide"]  # the clips' names: their files' (or folder's) stems


@pytest.fixture(scope="module")
def prepared(sources, tmp_path_factory):
    """One prepare run shared by the tests below (it is the slow part)."""
    out = tmp_path_factory.mktemp("prepared") / "data"
    capture = {}

    import contextlib
    import io

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["prepare", *sources, "--out", str(out), "--size", "128", "--max-frames", "30",
                     "--workers", "1", "--preview", "--min-valid", "0.25"])
    capture["code"], capture["stdout"] = code, stdout.getvalue()
    return out, capture


def _clip_files(root: Path) -> list[Path]:
    return sorted((root / "clips").rglob("*.safetensors"))


def test_prepare_writes_readable_clips(prepared, sources):
    out, run = prepared
    assert run["code"] == 0, run["stdout"]
    files = _clip_files(out)
    assert [f.stem for f in files] == NAMES
    for f in files:
        reader = ClipReader(f)
        assert len(reader) == 30
        assert reader.meta["size"] == "128"
        assert Path(reader.meta["source"]).is_absolute() and Path(reader.meta["source"]).exists()
        assert float(reader.meta["fps"]) == pytest.approx(30.0 if f.stem == "wide" else 25.0, abs=0.01)
        assert int(reader.meta["width"]) == (640 if f.stem == "wide" else 256)
        assert reader.valid.sum() >= 25  # a face in (nearly) every frame
        image = reader.frame(int(reader.valid_indices[0]))
        assert image.shape == (128, 128, 3) and image.dtype == np.uint8
        good = reader.landmarks[reader.valid]
        assert np.isfinite(good).all()
        assert np.isnan(reader.landmarks[~reader.valid]).all()
        # landmarks inside the crop, the face centred-ish and ~1/1.8 of the crop wide
        assert (good >= -2).all() and (good <= 130).all()
        extent = (good.max(axis=1) - good.min(axis=1)).max(axis=1)
        assert np.median(extent) == pytest.approx(128 / 1.8, rel=0.2)
        assert reader.boxes.shape == (30, 3) and np.isfinite(reader.boxes).all()
    index = load_index(out)
    assert {row["clip"] for row in index["clips"]} == set(NAMES)
    assert (out / "preview.png").is_file()
    # each clip's tracking figures: frames by status, and the track against fresh detections
    for row in index["clips"]:
        tracking = row["tracking"]
        statuses = ("tracked", "verified", "redetected", "held", "lost")
        assert tracking["frames"] == 30 == sum(tracking[k] for k in statuses)
        check = tracking["check"]
        assert check["sampled"] == 4 and check["checked"] + check["lost"] + check["no_face"] == 4
        assert check["checked"] >= 3 and check["off"] == 0 and check["median"] < 0.05, (row["clip"], check)
    assert "tracking: 90 frames" in run["stdout"] and "tracking check: " in run["stdout"]


def test_bad_clip_is_skipped_with_a_reason(prepared):
    out, run = prepared
    assert "skipped: broken: not a readable video" in run["stdout"]
    assert not list((out / "clips").rglob("broken*"))
    assert not [p for p in out.rglob(".*") if p.is_file()]  # no temporary files left behind
    assert "prepared 3 clips, 0 already done, 1 skipped" in run["stdout"]


def test_rerun_skips_done_clips_and_overwrite_redoes_them(prepared, sources, capsys):
    out, _ = prepared
    good = sources[:1]  # one clip is enough to see the behaviour
    target = out / "clips" / "driver" / "driver.safetensors"
    before = target.stat().st_mtime_ns
    assert main(["prepare", *good, "--out", str(out), "--size", "128", "--max-frames", "30", "--workers", "1"]) == 0
    assert "prepared 0 clips, 1 already done, 0 skipped" in capsys.readouterr().out
    assert target.stat().st_mtime_ns == before
    assert main(["prepare", *good, "--out", str(out), "--size", "128", "--max-frames", "30", "--workers", "1",
                 "--overwrite"]) == 0
    assert "prepared 1 clips, 0 already done" in capsys.readouterr().out
    assert target.stat().st_mtime_ns != before
    assert len(ClipReader(target)) == 30


def test_unwritable_out_exits_2_with_one_line(tmp_path, sources, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["prepare", sources[0], "--out", str(blocker / "data")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and str(blocker / "data") in err and "\n" not in err


def test_bad_input_exit_codes(tmp_path, sources, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["prepare", str(empty), "--out", str(tmp_path / "d1")]) == 2
    assert "no video files or frame folders found" in capsys.readouterr().err
    assert main(["prepare", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "d2")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["prepare", sources[0], "--out", str(tmp_path / "d3"), "--shard", "3/2"]) == 2
    assert "--shard" in capsys.readouterr().err
    # only a broken clip: nothing usable -> 3
    assert main(["prepare", sources[-1], "--out", str(tmp_path / "d4"), "--workers", "1"]) == 3
    captured = capsys.readouterr()
    assert "skipped: broken" in captured.out and "no clip produced any data" in captured.err


def test_no_face_and_min_valid_skip(tmp_path, capsys):
    import av

    path = tmp_path / "wall.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 96, 96, "yuv420p"
        for i in range(6):
            frame = av.VideoFrame.from_ndarray(np.full((96, 96, 3), 40 + 10 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    assert main(["prepare", str(path), "--out", str(tmp_path / "d"), "--workers", "1"]) == 3
    assert "skipped: wall: no face found" in capsys.readouterr().out


def test_shards_partition_clips_and_merge(shipped_clips, tmp_path, capsys):
    srcs = [str(shipped_clips["tight"]), str(shipped_clips["other"])]
    common = ["--size", "64", "--max-frames", "8", "--workers", "1"]
    assert main(["prepare", *srcs, "--out", str(tmp_path / "a"), "--shard", "1/2", *common]) == 0
    assert main(["prepare", *srcs, "--out", str(tmp_path / "b"), "--shard", "2/2", *common]) == 0
    a, b = _clip_files(tmp_path / "a"), _clip_files(tmp_path / "b")
    assert len(a) == 1 and len(b) == 1 and a[0].name != b[0].name
    capsys.readouterr()
    assert main(["prepare", "--merge", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "merged 1 clip files" in capsys.readouterr().out
    index = json.loads((tmp_path / "a" / "index.json").read_text())
    assert sorted(row["clip"] for row in index["clips"]) == ["driver", "other"]
    assert main(["prepare", "--merge", str(tmp_path / "a")]) == 0  # rebuild only


def test_worker_pool(shipped_clips, tmp_path, capsys):
    srcs = [str(shipped_clips["tight"]), str(shipped_clips["other"])]
    assert main(["prepare", *srcs, "--out", str(tmp_path / "d"), "--size", "64", "--max-frames", "6",
                 "--workers", "2"]) == 0
    assert "with 2 worker(s)" in capsys.readouterr().out
    assert len(_clip_files(tmp_path / "d")) == 2


# -- source discovery (no decoding) --------------------------------------------------------------

def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_discover_voxceleb_layout_frames_and_manifest(tmp_path):
    vox = tmp_path / "vox2"
    _touch(vox / "id001" / "vidA" / "00001.mp4")
    _touch(vox / "id001" / "vidA" / "00002.mp4")
    _touch(vox / "id002" / "vidB" / "00001.mp4")
    _touch(vox / "id003" / "talk" / "0001.jpg")  # a folder of frames inside the layout
    _touch(vox / "id003" / "talk" / "0002.jpg")
    clips, _notes = discover_sources([vox])
    assert [(c.clip, c.identity, c.video) for c in clips] == [
        ("id001/vidA/00001", "id001", "vidA"), ("id001/vidA/00002", "id001", "vidA"),
        ("id002/vidB/00001", "id002", "vidB"), ("id003/talk", "id003", "talk")]
    assert clips[0].relpath == "clips/id001/vidA_00001.safetensors"
    assert len({c.relpath for c in clips}) == len(clips)

    flat = tmp_path / "flat"
    _touch(flat / "anna.mov")
    _touch(flat / "cover.jpg")  # a single image is not a clip
    clips, notes = discover_sources([flat])
    assert [(c.clip, c.identity) for c in clips] == [("anna", "anna")]
    assert any("not clips" in n for n in notes)

    _touch(tmp_path / "m" / "videos" / "a1.mp4")
    _touch(tmp_path / "m" / "videos" / "a2.mp4")
    manifest = tmp_path / "m" / "list.csv"
    manifest.write_text("identity,path,kind\nann,videos/a1.mp4,video\nann,videos/a2.mp4,video\n"
                        "ann,photo.jpg,image:photo\n")
    clips, notes = discover_sources([manifest])
    assert [(c.clip, c.identity) for c in clips] == [("ann/a1", "ann"), ("ann/a2", "ann")]
    assert clips[0].path == (tmp_path / "m" / "videos" / "a1.mp4").resolve()
    assert any("image rows" in n for n in notes)


def test_discover_deduplicates_and_disambiguates(tmp_path):
    a = _touch(tmp_path / "x" / "talk.mp4")
    b = _touch(tmp_path / "y" / "talk.mp4")
    clips, _ = discover_sources([a, a, b])
    assert len(clips) == 2 and len({c.clip for c in clips}) == 2
    # stable: the same input gives the same ids
    assert [c.clip for c in clips] == [c.clip for c in discover_sources([b, a])[0]]


def test_shard_selection_is_a_partition(tmp_path):
    for i in range(7):
        _touch(tmp_path / f"c{i}.mp4")
    clips, _ = discover_sources([tmp_path])
    parts = [select_shard(clips, (i, 3)) for i in (1, 2, 3)]
    ids = [c.clip for part in parts for c in part]
    assert sorted(ids) == sorted(c.clip for c in clips) and len(ids) == len(set(ids))
    assert parse_shard("2/3") == (2, 3)
    for bad in ("0/3", "4/3", "x", "1/0"):
        with pytest.raises(TalkingHeadError):
            parse_shard(bad)


def test_index_ignores_clips_still_being_written(tmp_path):
    """A shard writing into the same folder leaves '.name.tmp.safetensors' files while it
    works; another shard's index rebuild must not list them."""
    from talkinghead.data.store import build_index

    (tmp_path / "clips" / "x").mkdir(parents=True)
    (tmp_path / "clips" / "x" / ".clip.abc123.tmp.safetensors").write_bytes(b"partial")
    index = build_index(tmp_path)
    assert index["clips"] == [] and index["unreadable"] == []


def test_preview_grid_is_as_wide_as_its_clips(tmp_path):
    from PIL import Image

    from talkinghead.data.prepare import PREVIEW_PER_CLIP, PREVIEW_THUMB, write_preview

    thumb = np.full((PREVIEW_THUMB, PREVIEW_THUMB, 3), 200, np.uint8)
    write_preview(tmp_path / "one.png", [("clip", [thumb] * PREVIEW_PER_CLIP)])
    write_preview(tmp_path / "five.png", [(f"clip{i}", [thumb] * PREVIEW_PER_CLIP) for i in range(5)])
    strip = PREVIEW_PER_CLIP * PREVIEW_THUMB
    with Image.open(tmp_path / "one.png") as one, Image.open(tmp_path / "five.png") as five:
        assert one.width < strip + 20  # one clip: no empty columns beside it
        assert five.width > 3 * strip and five.height > one.height * 1.5  # 3 columns, 2 rows
