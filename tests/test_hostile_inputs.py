"""Issue 15: bad input of every kind ends in one line and a documented exit status, never a
traceback, a silently wrong result or a temporary file left behind."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import struct
import sys
import textwrap
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest

from talkinghead.cli import main
from talkinghead.config import get_preset
from talkinghead.data.video import iter_frames, probe_video, read_frames, read_image, write_video
from talkinghead.errors import NoFaceError, TalkingHeadError
from talkinghead.infer.bundled import BUNDLED_CHECKPOINT


def _one_line_error(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def _marker_frames(count: int, height: int = 48, width: int = 64) -> list[np.ndarray]:
    """Frames with a white block in the top-left corner and a moving bar (distinct frames)."""
    frames = []
    for i in range(count):
        frame = np.full((height, width, 3), (i * 2) % 200, np.uint8)
        frame[:, (i % (width - 8)):(i % (width - 8)) + 4] = 128
        frame[:12, :20] = 255
        frames.append(frame)
    return frames


def _no_leftovers(folder: Path) -> None:
    hidden = [p.name for p in folder.rglob(".*") if ".tmp" in p.name]
    assert not hidden, f"temporary files left behind: {hidden}"


@pytest.fixture(scope="module")
def portrait(astronaut_png) -> Path:
    """One frontal face (scikit-image's astronaut)."""
    return astronaut_png


@pytest.fixture(scope="module")
def ff_avatar(portrait, tmp_path_factory) -> Path:
    """A feed-forward avatar of the bundled model (no fine-tuning: fast)."""
    from talkinghead.infer.avatar import Avatar

    out = tmp_path_factory.mktemp("avatar") / "ff.avatar"
    Avatar.from_images([portrait], BUNDLED_CHECKPOINT, finetune_steps=0, progress=False).save(out)
    return out


# -- item 5 / 9: one validation layer for arguments and config fields --------------------------------

BAD_ARGUMENTS = [
    (["animate", "--avatar", "A", "--landmarks", "t.npy", "-o", "o.mp4", "--batch-size", "-1"], "--batch-size"),
    (["animate", "--avatar", "A", "--landmarks", "t.npy", "-o", "o.mp4", "--batch-size", "0"], "--batch-size"),
    (["animate", "--avatar", "A", "--landmarks", "t.npy", "-o", "o.mp4", "--fps", "-5"], "--fps"),
    (["animate", "--avatar", "A", "--landmarks", "t.npy", "-o", "o.mp4", "--fps", "1e9"], "--fps"),
    (["animate", "--avatar", "A", "--landmarks", "t.npy", "-o", "o.mp4", "--fps", "nan"], "--fps"),
    (["animate", "--avatar", "A", "--landmarks", "t.npy", "-o", "o.mp4", "--fps", "0.0001"], "--fps"),
    (["animate", "--avatar", "A", "--landmarks", "t.npy", "-o", "o.mp4", "--fps", "0.5"], "--fps"),
    (["animate", "--source", "s.jpg", "--landmarks", "t.npy", "-o", "o.mp4", "--steps", "-5"], "--steps"),
    (["finetune", "s.jpg", "-o", "a.avatar", "--steps", "-5"], "--steps"),
    (["finetune", "v.mp4", "-o", "a.avatar", "--shots", "-2"], "--shots"),
    (["evaluate", "--data", "d", "-o", "r", "--targets", "0"], "--targets"),
    (["evaluate", "--data", "d", "-o", "r", "--shots", "0"], "--shots"),
    (["train", "d", "--out", "r", "--batch-size", "0"], "--batch-size"),
    (["train", "d", "--out", "r", "--steps", "-5"], "--steps"),
    (["prepare", "v.mp4", "--out", "d", "--size", "0"], "--size"),
    (["prepare", "v.mp4", "--out", "d", "--min-valid", "2"], "--min-valid"),
    (["demo", "--frames", "0"], "--frames"),
]


@pytest.mark.parametrize("argv,flag", BAD_ARGUMENTS, ids=[" ".join(a[-2:]) for a, _ in BAD_ARGUMENTS])
def test_nonsense_arguments_are_refused_in_one_line(argv, flag, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    line = _one_line_error(capsys.readouterr().err)
    assert flag in line and "error" in line


BAD_SETTINGS = ["train.batch_size=0", "train.checkpoint_every=0", "train.log_every=0", "train.betas=0.5",
                "train.lr_generator=nan", "model.embed_dim=0", "train.num_workers=-2",
                "train.finetune_batch_size=0", "train.steps=-5", "loss.face=inf", "train.shots=0",
                "train.guide_occlusion=1.5", "train.guide_occlusion=-0.1"]


@pytest.mark.parametrize("setting", BAD_SETTINGS)
def test_config_validation_names_the_field(setting):
    key = setting.split("=")[0]
    with pytest.raises(TalkingHeadError, match=key.replace(".", r"\.")):
        get_preset("tiny").override([setting])


@pytest.mark.parametrize("setting", ["train.batch_size=0", "train.lr_generator=nan", "train.betas=0.5"])
def test_train_cli_refuses_bad_settings_before_training(setting, synthetic_dataset, tmp_path, capsys):
    rc = main(["train", str(synthetic_dataset), "--preset", "tiny", "--out", str(tmp_path / "run"),
               "--set", setting])
    assert rc == 2 and setting.split("=")[0] in _one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "run" / "latest.safetensors").exists()


def test_finetune_cli_refuses_bad_finetune_setting(portrait, tmp_path, capsys):
    rc = main(["finetune", str(portrait), "--set", "train.finetune_batch_size=0", "-o", str(tmp_path / "a.avatar")])
    assert rc == 2 and "train.finetune_batch_size" in _one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize("device", ["bogus", "cuda:7"])
def test_unknown_or_missing_device_is_one_line(device, portrait, tmp_path, capsys):
    import torch

    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    rc = main(["finetune", str(portrait), "--device", device, "-o", str(tmp_path / "a.avatar")])
    assert rc == 2 and "--device" in _one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize("command", ["finetune", "animate", "export"])
def test_output_naming_an_existing_folder_is_refused(command, portrait, ff_avatar, tmp_path, capsys):
    folder = tmp_path / "out.mp4" if command == "animate" else tmp_path / "out"
    folder.mkdir()
    argv = {"finetune": ["finetune", str(portrait), "--steps", "0", "-o", str(folder)],
            "animate": ["animate", "--avatar", str(ff_avatar), "--landmarks", "t.npy", "-o", str(folder)],
            "export": ["export", str(BUNDLED_CHECKPOINT), "-o", str(folder)]}[command]
    rc = main(argv)
    line = _one_line_error(capsys.readouterr().err)
    assert rc == 2 and str(folder) in line and "folder" in line


def test_atomic_path_refuses_a_folder(tmp_path):
    from talkinghead.fileio import atomic_path

    with pytest.raises(TalkingHeadError, match="is a folder"):
        with atomic_path(tmp_path):
            pass


def test_decompression_bomb_is_one_line(tmp_path, monkeypatch):
    from PIL import Image

    path = tmp_path / "huge.png"
    cv2.imwrite(str(path), np.zeros((64, 64, 3), np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64² > 2 × 1000: Pillow refuses it
    with pytest.raises(TalkingHeadError, match="too large"):
        read_image(path)


# -- full disk and other OS errors: one place, one line ------------------------------------------------

def _enospc_oserror(path):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def _enospc_safetensors(path):
    from safetensors import SafetensorError

    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


@pytest.mark.parametrize("fail", [_enospc_oserror, _enospc_safetensors], ids=["OSError", "SafetensorError"])
def test_full_disk_is_one_line_and_leaves_nothing(fail, tmp_path, monkeypatch, capsys):
    import talkinghead.checkpoint as checkpoint

    def full_disk_save(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")  # the disk filled up part-way
        fail(filename)

    monkeypatch.setattr(checkpoint, "save_file", full_disk_save)
    out = tmp_path / "out"
    rc = main(["export", str(BUNDLED_CHECKPOINT), "-o", str(out / "model.safetensors")])
    line = _one_line_error(capsys.readouterr().err)
    assert rc == 2 and "no space left" in line.lower()
    assert list(out.iterdir()) == []  # neither the output nor its temporary file


def test_os_error_message_names_the_output_not_the_temporary_file():
    from talkinghead.fileio import os_error_message

    exc = OSError(errno.EACCES, "Permission denied", "/data/.model.ab12cd.tmp.safetensors")
    assert os_error_message(exc) == "/data/model.safetensors: Permission denied"
    assert os_error_message(ValueError("x")) is None


# -- item 8: SIGTERM → exit 143, no temporary file -----------------------------------------------------

def test_sigterm_exits_143_without_temporary_files(tmp_path, start_process):
    out = tmp_path / "out" / "model.safetensors"
    script = textwrap.dedent(f"""
        import sys, time
        import talkinghead.checkpoint as checkpoint
        from talkinghead.fileio import atomic_path

        def slow_export(src, dst, **kwargs):
            with atomic_path(dst) as tmp:
                tmp.write_bytes(b"partial")
                print("writing", flush=True)
                time.sleep(60)

        checkpoint.export_checkpoint = slow_export
        from talkinghead.cli import main
        sys.exit(main(["export", {str(BUNDLED_CHECKPOINT)!r}, "-o", {str(out)!r}]))
    """)
    proc = start_process([sys.executable, "-c", script])
    assert proc.stdout.readline().strip() == "writing"
    assert any(p.name.endswith(".tmp.safetensors") for p in out.parent.iterdir())
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "terminated" in err
    assert list(out.parent.iterdir()) == []


# -- items 3, 4, 10: video reading ---------------------------------------------------------------------

def _set_display_rotation(path: Path, counter_clockwise: int) -> None:
    """Patch the track header's display matrix, as a phone does for portrait footage."""
    data = bytearray(path.read_bytes())
    identity = struct.pack(">9i", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    at = data.find(identity, data.find(b"tkhd"))
    assert at > 0
    c, s = {90: (0, 1), -90: (0, -1), 180: (-1, 0)}[counter_clockwise]
    matrix = (c * 0x10000, -s * 0x10000, 0, s * 0x10000, c * 0x10000, 0, 0, 0, 0x40000000)
    data[at:at + 36] = struct.pack(">9i", *matrix)
    path.write_bytes(bytes(data))


def test_video_rotation_metadata_is_applied(tmp_path):
    import av

    path = tmp_path / "portrait.mp4"
    write_video(path, _marker_frames(5), 25)  # 64 wide, 48 high, white block top-left
    _set_display_rotation(path, -90)  # shown turned 90° clockwise
    with av.open(str(path)) as c:
        assert next(c.decode(video=0)).rotation == -90
    frames = read_frames(path)
    assert frames.shape == (5, 64, 48, 3)  # upright: portrait
    # the top-left block is at the top right once turned clockwise
    assert frames[0, :10, -8:].mean() > 200 and frames[0, :10, :8].mean() < 150
    info = probe_video(path)
    assert (info.width, info.height) == (48, 64)


def test_damaged_packets_are_skipped_and_reported(tmp_path, caplog):
    path = tmp_path / "damaged.mp4"
    write_video(path, _marker_frames(128, 64, 64), 25)
    data = bytearray(path.read_bytes())
    garbage = np.random.default_rng(0).integers(0, 256, 400, dtype=np.uint8).tobytes()
    data[len(data) // 3:len(data) // 3 + 400] = garbage
    path.write_bytes(bytes(data))
    report: dict = {}
    with caplog.at_level(logging.WARNING, logger="talkinghead.data.video"):
        frames = list(iter_frames(path, report=report))
    assert len(frames) >= 100  # decoding the stream as one stopped at frame 44
    assert report["lost"] == 128 - len(frames) > 0
    assert any("damaged" in r.getMessage() and str(report["lost"]) in r.getMessage() for r in caplog.records)


def test_relative_paths_with_a_colon_are_files_not_protocols(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert write_video("take:1.mp4", _marker_frames(6), 25) == 6  # its temporary name has a colon too
    assert len(read_frames("take:1.mp4")) == 6
    assert probe_video("take:1.mp4").frames == 6
    _no_leftovers(tmp_path)


# -- item 7: streaming frame selection ---------------------------------------------------------------

def test_even_sample_keeps_bounded_memory_and_spans_the_stream():
    from talkinghead.infer.faces import EvenSample

    sample = EvenSample(8)
    most = 0
    for i in range(1000):
        sample.add(i)
        most = max(most, len(sample.kept))
    picks = [i for i, _ in sample.picks()]
    assert most <= 16 and len(picks) == 8
    assert picks[0] == 0 and picks[-1] >= 900 and np.all(np.diff(picks) > 90)


def test_video_source_is_not_decoded_whole_into_memory(tmp_path, monkeypatch):
    import talkinghead.infer.faces as faces

    def long_video(path):
        for i in range(400):  # 400 × 120 kB = 48 MB if all were kept
            yield np.full((200, 200, 3), i % 256, np.uint8)

    monkeypatch.setattr(faces, "iter_frames", long_video)
    tracemalloc.start()
    try:
        items = faces._expand_sources(str(tmp_path / "talk.mp4"), shots=4)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(items) == 4 and peak < 5 * 2**20
    assert items[0][0].endswith("#0") and int(items[-1][0].split("#")[1]) >= 350


# -- item 6: animate checks its arguments before fine-tuning ------------------------------------------

@pytest.mark.parametrize("problem", ["driving", "reference", "output"])
def test_animate_checks_arguments_before_finetuning(problem, portrait, tmp_path, monkeypatch, capsys):
    from talkinghead.infer.avatar import Avatar

    def no_finetuning(*args, **kwargs):
        raise AssertionError("fine-tuning started before the arguments were checked")

    monkeypatch.setattr(Avatar, "from_images", no_finetuning)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    argv = ["animate", "--source", str(portrait), "--driving", str(tmp_path / "missing.mp4"),
            "-o", str(tmp_path / "o.mp4")]
    if problem == "reference":
        track = tmp_path / "t.npy"
        np.save(track, np.zeros((5, 68, 2), np.float32))
        argv = ["animate", "--source", str(portrait), "--landmarks", str(track), "--reference", "x",
                "-o", str(tmp_path / "o.mp4")]
    elif problem == "output":
        track = tmp_path / "t.npy"
        np.save(track, np.zeros((5, 68, 2), np.float32))
        argv = ["animate", "--source", str(portrait), "--landmarks", str(track),
                "-o", str(blocker / "o.mp4")]
    rc = main(argv)
    line = _one_line_error(capsys.readouterr().err)
    assert rc == 2
    assert {"driving": "missing.mp4", "reference": "--reference", "output": "a_file"}[problem] in line


def test_reference_index_beyond_the_track_is_one_line(ff_avatar, tmp_path, capsys):
    from talkinghead.infer.avatar import Avatar

    avatar = Avatar.load(ff_avatar)
    track = tmp_path / "t.npy"
    np.save(track, np.repeat(avatar.landmarks[:1], 10, axis=0))
    rc = main(["animate", "--avatar", str(ff_avatar), "--landmarks", str(track), "--reference", "9999",
               "-o", str(tmp_path / "o.mp4")])
    line = _one_line_error(capsys.readouterr().err)
    assert rc == 2 and "9999" in line and "10 frames" in line
    assert not (tmp_path / "o.mp4").exists()


# -- item 11: dlib's CNN detector where HOG finds nothing ------------------------------------------

def test_cnn_detector_finds_the_face_hog_misses(portrait):
    from talkinghead.data.landmarks import get_detector
    from talkinghead.infer.faces import crops_from_sources

    image = read_image(portrait)
    h, w = image.shape[:2]
    hog = get_detector("dlib")
    upright_box = hog.detect_faces(image)[0]
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), 55, 1.0)  # a strongly tilted head
    tilted = cv2.warpAffine(image, turn, (w, h), borderMode=cv2.BORDER_REPLICATE)
    assert len(hog.detect_faces(tilted)) == 0  # HOG misses it
    faces = crops_from_sources([tilted], 128, progress=False)
    assert len(faces.crops) == 1
    assert any("CNN" in note for note in faces.notes)  # says which detector found it
    centre = turn @ np.array([(upright_box[0] + upright_box[2]) / 2, (upright_box[1] + upright_box[3]) / 2, 1])
    cx, cy, side = faces.source_box
    assert abs(cx - centre[0]) < side / 3 and abs(cy - centre[1]) < side / 3  # on the face


class _StubDetector:
    """Finds a face only in frame 0; in frame 2 its predictor jumps off the face unless given
    the fallback's box (a lost track that only the stronger detector recovers)."""

    accepts_gray = False
    BOX = np.array([20, 20, 80, 80], np.float32)
    FALLBACK_BOX = np.array([22, 22, 82, 82], np.float32)

    def __init__(self, finds_always: bool = False):
        self.finds_always = finds_always
        self.name = "stub-cnn" if finds_always else "stub"
        self.calls = 0

    def detect_faces(self, image):
        self.calls += 1
        if self.finds_always:
            return self.FALLBACK_BOX[None].copy()
        return self.BOX[None].copy() if image[0, 0, 0] == 0 else np.zeros((0, 4), np.float32)

    def landmarks_in_box(self, image, box):
        from talkinghead.data.landmarks import _HOG_BOX_OFFSET, _HOG_BOX_SCALE
        from talkinghead.data.synthetic import template_landmarks

        pts = template_landmarks(100)
        lo, hi = pts.min(0), pts.max(0)
        pts = (pts - (lo + hi) / 2) / (hi - lo).max()  # extent 1, centred
        side = float(box[2] - box[0])
        extent = side / _HOG_BOX_SCALE
        centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]) - _HOG_BOX_OFFSET * extent
        pts = pts * extent + centre
        if image[0, 0, 0] == 2 and not np.allclose(box, self.FALLBACK_BOX):
            pts = pts + 500  # the tracked shape jumps away: the track is lost
        return pts.astype(np.float32)


@pytest.mark.parametrize("with_fallback", [False, True])
def test_tracking_falls_back_to_the_stronger_detector_after_a_lost_track(with_fallback):
    from talkinghead.data.landmarks import track_landmarks

    frames = [np.full((100, 100, 3), v, np.uint8) for v in (0, 1, 2, 1)]
    fallback = _StubDetector(finds_always=True) if with_fallback else None
    _, valid, stats = track_landmarks(frames, _StubDetector(), fallback=fallback)
    assert valid[:2].all()
    assert bool(valid[2]) is with_fallback
    assert stats["fallback_found"] == (1 if with_fallback else 0)


# -- item 12: smaller ones -------------------------------------------------------------------------------

def _faceless_video(path: Path) -> Path:
    rng = np.random.default_rng(0)
    write_video(path, [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(6)], 25)
    return path


def test_prepare_refuses_to_mix_crop_sizes(synthetic_dataset, tmp_path, capsys):
    import shutil

    data = tmp_path / "data64"
    shutil.copytree(synthetic_dataset, data)  # a 64-px data set
    video = _faceless_video(tmp_path / "clip.mp4")
    rc = main(["prepare", str(video), "--out", str(data), "--size", "128", "--workers", "1"])
    line = _one_line_error(capsys.readouterr().err)
    assert rc == 2 and "64-px" in line and "--size 128" in line


def test_same_file_name_in_different_folders_is_two_identities(tmp_path):
    from talkinghead.data.prepare import discover_sources

    for folder in ("alice", "bob"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "take.mp4").write_bytes(b"")
    clips, notes = discover_sources([tmp_path / "alice" / "take.mp4", tmp_path / "bob" / "take.mp4"])
    assert len(clips) == 2 and len({c.identity for c in clips}) == 2
    assert len({c.relpath for c in clips}) == 2 and any("take" in n for n in notes)


def test_prepare_exit_3_names_the_file(tmp_path, capsys):
    video = _faceless_video(tmp_path / "nobody.mp4")
    rc = main(["prepare", str(video), "--out", str(tmp_path / "data"), "--workers", "1", "--size", "64"])
    err = capsys.readouterr().err
    assert rc == 3 and "Traceback" not in err
    assert "nobody.mp4" in err.strip().splitlines()[-1]


def test_resume_from_an_exported_model_names_the_missing_optimiser_state(synthetic_dataset, tmp_path, capsys):
    rc = main(["train", str(synthetic_dataset), "--out", str(tmp_path / "run"), "--resume", str(BUNDLED_CHECKPOINT)])
    line = _one_line_error(capsys.readouterr().err)
    assert rc == 2 and "optimiser state" in line and "--init-from" in line


def test_preset_under_init_from_is_not_silently_ignored(synthetic_dataset, tmp_path, capsys):
    rc = main(["train", str(synthetic_dataset), "--out", str(tmp_path / "run"), "--init-from",
               str(BUNDLED_CHECKPOINT), "--preset", "tiny"])
    line = _one_line_error(capsys.readouterr().err)
    assert rc == 2 and "--preset tiny" in line and "'small'" in line


def test_low_resolution_source_is_warned_about(portrait):
    from talkinghead.infer.faces import crops_from_sources

    small = cv2.resize(read_image(portrait), (32, 32), interpolation=cv2.INTER_AREA)
    try:
        faces = crops_from_sources([small], 128, progress=False)
    except NoFaceError as exc:  # also fine, as long as it says why
        assert "32" in str(exc)
        return
    assert any("low resolution" in note for note in faces.notes)


def test_profile_source_is_warned_about_and_frontal_is_not(portrait):
    from talkinghead.data.warp import TEMPLATE_68
    from talkinghead.infer.faces import PROFILE_NOSE_MARGIN, crops_from_sources, nose_position

    frontal = TEMPLATE_68 * 128
    assert abs(nose_position(frontal) - 0.5) < 0.05
    profile = frontal.copy()
    profile[27:36, 0] -= 0.55 * (frontal[16, 0] - frontal[0, 0])  # nose swung past the left jaw end
    assert nose_position(profile) < PROFILE_NOSE_MARGIN
    faces = crops_from_sources([portrait], 128, progress=False)
    assert not any("profile" in note for note in faces.notes)
    mirrored = cv2.flip(read_image(portrait), 1)  # still frontal: a mirror is no profile
    assert not any("profile" in note for note in crops_from_sources([mirrored], 128, progress=False).notes)


def test_python_api_uses_the_bundled_model_by_default(portrait):
    from talkinghead.infer.avatar import Avatar

    avatar = Avatar.from_images([portrait], finetune_steps=0, progress=False)
    assert avatar.size == 128 and avatar.meta_checkpoint == str(BUNDLED_CHECKPOINT)


# -- issue 29, rows 15-16: edited avatar files and non-finite weights -----------------------------------

def _edit_safetensors(src: Path, dst: Path, tensors: dict | None = None, drop: tuple = (),
                      meta: dict | None = None, config: dict | None = None) -> Path:
    """A copy of a talkinghead safetensors file with tensors replaced, added or dropped, header
    entries changed, and ``config`` entries (``"model.max_channels": 10**9``) edited."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(src), "pt") as f:
        header = dict(f.metadata())
    data = {k: v for k, v in load_file(str(src)).items() if k not in drop}
    data.update(tensors or {})
    header.update(meta or {})
    if config:
        settings = json.loads(header["config"])
        for key, value in config.items():
            section, name = key.split(".")
            settings[section][name] = value
        header["config"] = json.dumps(settings)
    save_file(data, str(dst), metadata=header)
    return dst


def _bundled_generator(poison: bool = False) -> dict:
    """The bundled model's G weights as an avatar stores them; ``poison``: one tensor all NaN."""
    import torch
    from safetensors.torch import load_file

    weights = {k: v.float() for k, v in load_file(str(BUNDLED_CHECKPOINT)).items() if k.startswith("G.")}
    if poison:
        name = next(k for k, v in weights.items() if v.is_floating_point())
        weights[name] = torch.full_like(weights[name], float("nan"))
    return weights


def _avatar_edit(name: str) -> dict:
    """The ``_edit_safetensors`` arguments of one edit of an avatar file."""
    import torch

    nan = float("nan")
    if name == "NaN G weights":
        return dict(tensors=_bundled_generator(poison=True), meta={"finetune_steps": "5"})
    return {
        "psi shape": dict(tensors={"psi": torch.zeros(7)}),
        "landmarks shape": dict(tensors={"landmarks": torch.zeros(1, 5, 2)}),
        "crops shape": dict(tensors={"crops": torch.zeros(1, 64, 64, 3, dtype=torch.uint8)}),
        "crops dtype": dict(tensors={"crops": torch.zeros(1, 128, 128, 3)}),
        "shot_penalty shape": dict(tensors={"shot_penalty": torch.zeros(3)}),
        "no psi": dict(drop=("psi",)),
        "no embedding": dict(drop=("embedding",)),
        "no source_box": dict(drop=("source_box",)),
        "NaN landmarks": dict(tensors={"landmarks": torch.full((1, 68, 2), nan)}),
        "landmarks far outside": dict(tensors={"landmarks": torch.full((1, 68, 2), 1e30)}),
        "finetune_steps": dict(meta={"finetune_steps": "abc"}),
        "finetune_history": dict(meta={"finetune_history": "[NaN"}),
        "finetune_history NaN": dict(meta={"finetune_history": "[1.0, NaN]"}),
        "source_jpeg": dict(tensors={"source_jpeg": torch.arange(200, dtype=torch.uint8)}),
        "huge max_channels": dict(config={"model.max_channels": 10**9, "model.base_channels": 10**8}),
        "max_channels text": dict(config={"model.max_channels": "wide"}),
        "attention_sizes": dict(config={"model.attention_sizes": 5}),
        # row 16
        "NaN psi": dict(tensors={"psi": torch.full((1152,), nan)}),
        "Inf psi": dict(tensors={"psi": torch.full((1152,), float("inf"))}),
    }[name]


AVATAR_EDITS = ["psi shape", "landmarks shape", "crops shape", "crops dtype", "shot_penalty shape", "no psi",
                "no embedding", "no source_box", "NaN landmarks", "landmarks far outside", "finetune_steps",
                "finetune_history", "finetune_history NaN", "source_jpeg", "huge max_channels", "max_channels text",
                "attention_sizes", "NaN psi", "Inf psi", "NaN G weights"]


@pytest.fixture(scope="module")
def short_track(ff_avatar, tmp_path_factory) -> Path:
    """Two frames of the avatar's own landmarks (.npy)."""
    from safetensors.torch import load_file

    path = tmp_path_factory.mktemp("track") / "two.npy"
    np.save(path, np.repeat(load_file(str(ff_avatar))["landmarks"].numpy()[:1], 2, axis=0))
    return path


@pytest.mark.parametrize("edit", AVATAR_EDITS)
def test_edited_avatar_file_is_corrupt_avatar_exit_2(edit, ff_avatar, short_track, tmp_path, capsys):
    edited = _edit_safetensors(ff_avatar, tmp_path / "edited.avatar", **_avatar_edit(edit))
    out = tmp_path / "o.mp4"
    rc = main(["animate", "--avatar", str(edited), "--landmarks", str(short_track), "-o", str(out)])
    line = _one_line_error(capsys.readouterr().err)
    assert rc == 2 and "corrupt avatar" in line and "edited.avatar" in line, line
    assert not out.exists()


def test_avatar_with_its_own_finite_generator_still_loads(ff_avatar, tmp_path):
    from talkinghead.infer.avatar import Avatar

    edited = _edit_safetensors(ff_avatar, tmp_path / "ft.avatar", tensors=_bundled_generator(),
                               meta={"finetune_steps": "5"})
    avatar = Avatar.load(edited, device="cpu")
    assert avatar.finetune_steps == 5 and avatar.source_image is not None
    size = avatar.output_size  # the photo's face resolution (detail layer), not the network's 128
    assert avatar.animate(avatar.landmarks, progress=False).shape == (1, size, size, 3)


def test_config_beyond_the_parameter_bound_is_refused_before_building():
    from talkinghead.config import MAX_MODEL_PARAMETERS

    paper = get_preset("paper").model
    assert paper.parameter_bound() < MAX_MODEL_PARAMETERS / 10
    with pytest.raises(TalkingHeadError, match="parameters"):
        get_preset("small").override(["model.base_channels=100000", "model.max_channels=1000000"])
    with pytest.raises(TalkingHeadError, match="model.gen_res_blocks"):
        get_preset("small").override(["model.gen_res_blocks=1000000000"])


def test_finetune_refuses_a_checkpoint_of_nan_weights(portrait, tmp_path, capsys, monkeypatch):
    import torch
    from safetensors.torch import load_file

    from talkinghead.infer.avatar import Avatar

    def no_face_detection(*args, **kwargs):
        raise AssertionError("the checkpoint was used")

    monkeypatch.setattr(Avatar, "from_images", no_face_detection)
    nan = {k: torch.full_like(v, float("nan")) for k, v in load_file(str(BUNDLED_CHECKPOINT)).items()
           if v.is_floating_point()}
    bad = _edit_safetensors(BUNDLED_CHECKPOINT, tmp_path / "nan.safetensors", tensors=nan)
    out = tmp_path / "a.avatar"
    rc = main(["finetune", str(portrait), "--checkpoint", str(bad), "-o", str(out)])
    line = _one_line_error(capsys.readouterr().err)
    assert rc == 2 and "nan.safetensors" in line and "NaN or Inf" in line
    assert not out.exists()


# -- row 17: hostile .npy landmark tracks ---------------------------------------------------------------

def _write_npy_case(case: str, path: Path) -> Path:
    good = np.random.default_rng(0).uniform(20, 100, (4, 68, 2)).astype(np.float32)
    if case == "empty":
        path.write_bytes(b"")
    elif case == "npz renamed":
        np.savez(path.with_suffix(".npz"), track=good)
        path.with_suffix(".npz").rename(path)
    elif case == "claims 1e9 frames":  # a header of 544 GB in front of 2 kB of data
        with open(path, "wb") as fh:
            np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False,
                                                      "shape": (10**9, 68, 2)})
            fh.write(good.tobytes())
    elif case == "truncated":
        np.save(path, good)
        path.write_bytes(path.read_bytes()[:300])
    elif case == "text":
        path.write_text("0 1 2\n")
    else:
        arrays = {"str": np.full((4, 68, 2), "a"), "structured": np.zeros((4, 68, 2), [("x", "f4")]),
                  "bool": good > 50, "complex": good.astype(np.complex64), "object": good.astype(object),
                  "wrong shape": good[:, :5], "no frames": good[:0]}
        np.save(path, arrays[case], allow_pickle=case == "object")
    return path


NPY_CASES = ["empty", "npz renamed", "claims 1e9 frames", "truncated", "text", "str", "structured", "bool",
             "complex", "object", "wrong shape", "no frames"]


@pytest.mark.parametrize("case", NPY_CASES)
def test_hostile_landmark_npy_is_one_line_exit_2(case, ff_avatar, tmp_path, capsys):
    track = _write_npy_case(case, tmp_path / "track.npy")
    rc = main(["animate", "--avatar", str(ff_avatar), "--landmarks", str(track), "-o", str(tmp_path / "o.mp4")])
    line = _one_line_error(capsys.readouterr().err)
    assert rc == 2 and "track.npy" in line, line
    assert not (tmp_path / "o.mp4").exists()


def test_npy_header_is_checked_before_reading_the_data(tmp_path):
    from talkinghead.fileio import load_npy_array

    path = _write_npy_case("claims 1e9 frames", tmp_path / "t.npy")
    tracemalloc.start()  # numpy reports its allocations to tracemalloc
    try:
        with pytest.raises(TalkingHeadError, match=r"1000000000, 68, 2"):
            load_npy_array(path, "landmark track", (68, 2))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**20
    good = _write_npy_case("wrong shape", tmp_path / "g.npy")
    np.save(good, np.arange(4 * 68 * 2, dtype=np.int16).reshape(4, 68, 2))
    assert load_npy_array(good, "landmark track", (68, 2)).shape == (4, 68, 2)  # integers are numbers


# -- row 18: a frame rate that rounds to nothing ----------------------------------------------------------

def test_write_video_refuses_a_rate_that_rounds_to_zero(tmp_path):
    with pytest.raises(TalkingHeadError, match="frames/s"):
        write_video(tmp_path / "slow.mp4", _marker_frames(2), 0.0001)
    assert write_video(tmp_path / "one.mp4", _marker_frames(2), 1.0) == 2  # the smallest --fps
    assert list(tmp_path.iterdir()) == [tmp_path / "one.mp4"]


# -- row 19: checkpoint metadata that is not what it says -------------------------------------------------

@pytest.mark.parametrize("meta", [{"step": "abc"}, {"step": "-3"}, {"videos": "{"}, {"extra": "[1]"}])
def test_checkpoint_with_bad_metadata_is_one_line(meta, portrait, tmp_path, capsys):
    bad = _edit_safetensors(BUNDLED_CHECKPOINT, tmp_path / "bad.safetensors", meta=meta)
    rc = main(["finetune", str(portrait), "--checkpoint", str(bad), "-o", str(tmp_path / "a.avatar")])
    line = _one_line_error(capsys.readouterr().err)
    assert rc == 2 and "bad.safetensors" in line and "corrupt checkpoint" in line
    assert not (tmp_path / "a.avatar").exists()


def test_app_refuses_a_checkpoint_with_a_bad_step(tmp_path, start_process):
    bad = _edit_safetensors(BUNDLED_CHECKPOINT, tmp_path / "bad.safetensors", meta={"step": "abc"})
    proc = start_process([sys.executable, "-m", "talkinghead.cli", "app", "--checkpoint", str(bad), "--port", "0"])
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "bad.safetensors" in _one_line_error(err)


# -- rows 20-21: prepare with a looping link, and on a full disk -------------------------------------------

def test_prepare_skips_a_link_to_itself_and_goes_on(rendered_driver, tmp_path, capsys):
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "talk.mp4").symlink_to(rendered_driver)
    (folder / "loop.mp4").symlink_to("loop.mp4")  # a link to itself
    (folder / "again").symlink_to(".", target_is_directory=True)  # a folder link to its own folder
    out = tmp_path / "data"
    rc = main(["prepare", str(folder), "--out", str(out), "--size", "64", "--workers", "1", "--max-frames", "3"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "skipped: loop: " in printed and "link" in printed
    index = json.loads((out / "index.json").read_text())
    assert [c["clip"] for c in index["clips"]] == ["talk"]


def _full_disk_oserror(path):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


@pytest.mark.parametrize("fail", [_full_disk_oserror, _enospc_safetensors], ids=["OSError", "SafetensorError"])
@pytest.mark.parametrize("existing", [False, True], ids=["new folder", "existing folder"])
def test_prepare_on_a_full_disk_is_exit_2_and_leaves_nothing(fail, existing, shipped_clips, tmp_path, monkeypatch,
                                                             capsys):
    import talkinghead.data.store as store

    def full_disk_save(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a clip")
        fail(filename)

    monkeypatch.setattr(store, "save_file", full_disk_save)
    out = tmp_path / "data"
    if existing:
        out.mkdir()
    rc = main(["prepare", str(shipped_clips["tight"]), str(shipped_clips["other"]), "--out", str(out), "--size", "64",
               "--workers", "1", "--max-frames", "2"])
    err = capsys.readouterr().err
    line = _one_line_error(err[err.index("error: "):])  # after the progress bar
    assert rc == 2 and "no space left" in line.lower() and str(out) in line
    if existing:
        assert [p for p in out.rglob("*") if p.is_file()] == []  # no index.json, no clip, no temporary file
    else:
        assert not out.exists()
