"""`talkinghead live` on a video file standing in for a camera: bounded runs, frame dropping
under a slowed renderer, the last good pose held when the face is lost, a clean Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import sys
import time

import numpy as np
import pytest

from talkinghead.cli import main
from talkinghead.infer.live import LatestSlot, LiveDriver, LivePipeline

@pytest.fixture(scope="module")
def driver_clip(rendered_driver, tmp_path_factory):
    """256×256, 25 fps, one talking face (the bundled model's astronaut), with audio: the
    rendered clip played forwards then backwards (96 frames, long enough for the real-time runs)."""
    from talkinghead.data.video import read_frames, write_video

    frames = read_frames(rendered_driver)
    path = tmp_path_factory.mktemp("driver") / "talking.mp4"
    write_video(path, np.concatenate([frames, frames[::-1]]), 25, audio_from=rendered_driver)
    return path


@pytest.fixture(scope="module")
def live_avatar(tmp_path_factory):
    """An FF avatar of scikit-image's astronaut on the bundled model (built once)."""
    from skimage import data

    from talkinghead.infer.avatar import Avatar
    from talkinghead.infer.bundled import BUNDLED_CHECKPOINT

    avatar = Avatar.from_images([data.astronaut()], BUNDLED_CHECKPOINT, finetune_steps=0, device="cpu",
                                progress=False)
    return avatar.save(tmp_path_factory.mktemp("live") / "astronaut.avatar")


def _face_then_blank(driver_clip, path, face_frames=20, blank_frames=25):
    from talkinghead.data.video import read_frames, write_video

    frames = list(read_frames(driver_clip, max_frames=face_frames))
    frames += [np.full_like(frames[0], 90)] * blank_frames
    write_video(path, frames, 25)
    return path


def test_slot_keeps_newest_and_counts_drops():
    slot = LatestSlot()
    for i in range(3):
        slot.put(i)
    assert slot.take() == 2 and slot.dropped == 2
    assert slot.take(timeout=0.01) is None
    slot.close()
    assert slot.closed_and_empty


def test_pipeline_drops_frames_when_renderer_is_slow():
    """A 100 fps source and a 20 fps renderer: most frames must be dropped, and counted."""

    def source():
        for i in range(40):
            time.sleep(0.01)
            yield np.full((8, 8, 3), i, np.uint8)

    def driver(image, t):
        return np.full((68, 2), float(image[0, 0, 0])), "ok"

    def renderer(landmarks):
        time.sleep(0.05)
        return np.full((4, 4, 3), int(landmarks[0, 0]), np.uint8)

    pipeline = LivePipeline(source(), driver, renderer)
    shown = [int(f.rendered[0, 0, 0]) for f in pipeline.frames()]
    stats = pipeline.stats
    assert stats.captured == 40
    assert 3 <= stats.shown <= 20 and stats.dropped >= 20
    assert stats.shown + stats.dropped == stats.captured
    assert shown == sorted(shown) and shown[-1] == 39  # newest frames win; the last is shown
    assert all(0 <= ms < 1000 for ms in stats.latencies_ms)


def test_pipeline_reraises_a_stage_error():
    def driver(image, t):
        raise RuntimeError("tracker broke")

    pipeline = LivePipeline(iter([np.zeros((4, 4, 3), np.uint8)] * 3), driver, lambda l: l)
    with pytest.raises(RuntimeError, match="tracker broke"):
        list(pipeline.frames())


def test_pipeline_finishes_frames_in_its_own_stage():
    import threading

    threads = {}

    class SplitRenderer:
        def render(self, landmarks):
            threads["render"] = threading.current_thread().name
            return np.zeros((4, 4, 3), np.uint8)

        def finish(self, image, landmarks):
            threads["finish"] = threading.current_thread().name
            return image + 7

    frames = [np.zeros((4, 4, 3), np.uint8)] * 3
    pipeline = LivePipeline(iter(frames), lambda image, t: (np.zeros((68, 2)), "ok"), SplitRenderer())
    shown = list(pipeline.frames())
    assert shown and all(int(f.rendered.max()) == 7 for f in shown)  # every frame was finished
    assert threads == {"render": "live-render", "finish": "live-finish"}
    assert len(pipeline.stats.finish_ms) >= len(shown)


def test_driver_holds_last_good_pose_when_face_is_lost(driver_clip):
    from talkinghead.data.landmarks import get_detector
    from talkinghead.data.video import read_frames

    avatar_marks = np.load(_bundled_track())[0]
    driver = LiveDriver(avatar_marks, get_detector("dlib"))
    blank = np.full((256, 256, 3), 90, np.uint8)
    marks, state = driver(blank, 0.0)
    assert state == "none" and np.allclose(marks, avatar_marks)  # no face yet: the avatar's own pose
    frames = read_frames(driver_clip, max_frames=6)
    for t, image in enumerate(frames):
        marks, state = driver(image, 0.04 * (t + 1))
        assert state == "ok" and marks.shape == (68, 2)
    confirmed = driver.last_confirmed.copy()  # the last pose the detector verified
    states = []
    for t in range(6):
        held, state = driver(blank, 1.0 + 0.04 * t)
        states.append(state)
        if state == "lost":
            assert np.array_equal(held, confirmed)
    # noticed within the verification period (3 frames), then held
    assert states[3:] == ["lost"] * 3, states
    assert driver.lost_frames >= 4
    again, state = driver(frames[-1], 2.0)
    assert state == "ok"


def _bundled_track():
    from talkinghead.infer.bundled import ASSETS

    return ASSETS / "demo_track.npy"


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_live_cli_runs_bounded_frames_and_records(driver_clip, live_avatar, tmp_path, capsys, backend):
    from talkinghead.data.video import read_frames

    if backend == "onnx":
        pytest.importorskip("onnxruntime", reason='live --onnx needs the [app] extra: pip install -e ".[test]"')
    out = tmp_path / "live.mp4"
    code = main(["live", "--avatar", str(live_avatar), "--video", str(driver_clip), "--no-window",
                 "--max-frames", "30", "--display-size", "128", "-o", str(out)] + (["--onnx"] if backend == "onnx" else []))
    text = capsys.readouterr().out
    assert code == 0, text
    assert "30 frames captured" in text
    assert re.search(r"tracking: \d+ frames, \d+ re-detected, \d+ held, \d+ lost", text), text
    late = re.search(r"30 frames captured(?: \(\+(\d+) )?", text).group(1)
    written = int(re.search(r"wrote .*: (\d+) frames", text).group(1))
    frames = read_frames(out)
    # How many of the 30 are shown depends on the machine's speed; the recording keeps the
    # source's time (frames dropped live repeat the one before): one frame per source frame read.
    assert len(frames) == written == 30 + int(late or 0) and frames.shape[1:] == (128, 128, 3)
    assert frames.std() > 10  # a rendered face, not a blank picture


def test_live_cli_counts_dropped_frames_with_slow_renderer(driver_clip, live_avatar, capsys):
    code = main(["live", "--avatar", str(live_avatar), "--video", str(driver_clip), "--no-window",
                 "--max-frames", "30", "--render-delay", "150"])
    text = capsys.readouterr().out
    assert code == 0, text
    found = re.search(r"(\d+) frames captured(?: \(\+(\d+) [^)]*\))?, (\d+) shown, (\d+) dropped", text)
    captured, late, shown, dropped = (int(v or 0) for v in found.groups())
    assert captured == 30 and shown <= 12 and dropped >= 15, text
    assert shown + dropped == captured + late, text  # every frame is either shown or counted as dropped


def test_live_cli_holds_last_pose_and_says_so(driver_clip, live_avatar, tmp_path, capsys):
    clip = _face_then_blank(driver_clip, tmp_path / "face_then_blank.mp4")
    code = main(["live", "--avatar", str(live_avatar), "--video", str(clip), "--no-window", "--max-frames", "45"])
    captured = capsys.readouterr()
    assert code == 0, captured.out
    assert "face lost: holding last pose" in captured.err
    assert "held the last good pose" in captured.out


def test_live_cli_rejects_bad_input(tmp_path, capsys):
    assert main(["live", "--source", str(tmp_path / "missing.jpg"), "--video", "x.mp4", "--no-window",
                 "--max-frames", "3", "-o", str(tmp_path / "o.avi")]) == 2
    assert "must be an .mp4" in capsys.readouterr().err


def test_live_ctrl_c_ends_cleanly(driver_clip, live_avatar, tmp_path, start_process):
    out = tmp_path / "live.mp4"
    proc = start_process([sys.executable, "-m", "talkinghead.cli", "live", "--avatar", str(live_avatar),
                          "--video", str(driver_clip), "--loop", "--no-window", "--display-size", "128",
                          "--serve", "0", "-o", str(out)],
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    line = proc.stdout.readline()  # "serving the live avatar at http://..." once running
    assert "serving the live avatar at http://127.0.0.1:" in line, proc.stderr.read()
    url = line.split(" at ")[1].split()[0]
    from urllib.request import urlopen

    jpeg = urlopen(url + "frame.jpg", timeout=20).read()  # a rendered frame is being served
    assert jpeg[:2] == b"\xff\xd8"
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
    assert "frames captured" in stdout
    from talkinghead.data.video import read_frames

    assert len(read_frames(out)) > 0  # the recording was finished, not left half-written


def test_live_cli_missing_camera_is_one_line(live_avatar, capsys):
    code = main(["live", "--avatar", str(live_avatar), "--camera", "63", "--no-window", "--max-frames", "3"])
    err = capsys.readouterr().err
    assert code == 2 and "error: camera 63: cannot be opened" in err and "Traceback" not in err


@pytest.mark.parametrize("command, extra", [("live", ["--video", "x.mp4"]), ("animate", ["--driving", "x.mp4", "-o", "o.mp4"])])
def test_live_and_animate_share_the_smoothing_and_person_options(command, extra):
    """`--no-smooth` (issue 12's name; `--no-smoothing` kept as an alias) and `--avatar`/`--source`
    mean the same in both commands."""
    from talkinghead.cli import build_parser

    parser = build_parser()
    base = [command, "--avatar", "a.avatar", *extra]
    assert parser.parse_args(base).no_smooth is False
    assert parser.parse_args(base + ["--no-smooth"]).no_smooth is True
    assert parser.parse_args(base + ["--no-smoothing"]).no_smooth is True
    with pytest.raises(SystemExit):  # one person only
        parser.parse_args([command, "--avatar", "a.avatar", "--source", "p.jpg", *extra])


# -- recordings keep the source's time (issue 29) --------------------------------------------------------

@pytest.fixture(scope="module")
def short_clip_with_audio(driver_clip, tmp_path_factory):
    """The driver's first 40 frames (1.6 s at 25 fps) with its audio."""
    from talkinghead.data.video import read_frames, write_video

    path = tmp_path_factory.mktemp("clip") / "short.mp4"
    write_video(path, read_frames(driver_clip, max_frames=40), 25, audio_from=driver_clip)
    return path


def _streams(path):
    """(seconds of video, number of video frames, seconds of audio or None)."""
    import av

    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        frames = sum(1 for _ in container.decode(video=0))
        video_s = float(video.duration * video.time_base)  # read while the container is open
    with av.open(str(path)) as container:
        audio_s = None
        if audio is not None:
            packets = [p for p in container.demux(audio=0) if p.pts is not None]
            audio_s = max(float((p.pts + (p.duration or 0)) * p.time_base) for p in packets)
    return video_s, frames, audio_s


def test_recorder_repeats_the_frame_before_for_dropped_slots(tmp_path):
    from talkinghead.data.video import read_frames
    from talkinghead.infer.live import LiveRecorder

    recorder = LiveRecorder(tmp_path / "r.mp4", fps=10)
    for seconds, value in [(0.2, 50), (0.21, 90), (0.6, 150), (0.7, 250)]:  # 0.21: same slot as 0.2
        recorder.add(np.full((16, 16, 3), value, np.uint8), seconds)
    recorder.close(until=1.0)
    shades = [int(round(f.mean())) for f in read_frames(tmp_path / "r.mp4")]
    expected = [50, 50, 50, 50, 50, 50, 150, 250, 250, 250, 250]  # slots 0..10 at 10 fps
    assert len(shades) == len(expected) == recorder.written
    assert all(abs(a - b) <= 3 for a, b in zip(shades, expected)), shades
    assert recorder.repeated == 8 and recorder.seconds == pytest.approx(1.1)


def test_slow_live_pipeline_records_the_source_duration_with_audio(short_clip_with_audio, tmp_path):
    from talkinghead.infer.live import LiveRecorder, VideoFileSource

    source = VideoFileSource(short_clip_with_audio)  # played in real time, like a camera

    def renderer(landmarks):
        time.sleep(0.12)  # about 8 frames/s for a 25 frames/s source: most frames are dropped
        return np.full((32, 32, 3), 128, np.uint8)

    pipeline = LivePipeline(source, lambda image, t: (np.zeros((68, 2)), "ok"), renderer)
    recorder = LiveRecorder(tmp_path / "live.mp4", source.fps, audio_from=short_clip_with_audio)
    for frame in pipeline.frames():
        recorder.add(frame.rendered, frame.time)
    recorder.close(until=pipeline.last_time)
    assert pipeline.stats.dropped >= 15 and recorder.repeated >= 15
    video_s, frames, audio_s = _streams(tmp_path / "live.mp4")
    assert frames == 40 and abs(video_s - 1.6) < 0.1
    assert audio_s is not None and abs(audio_s - 1.6) < 0.1


def test_live_cli_recording_lasts_as_long_as_the_driver_and_has_its_audio(short_clip_with_audio, live_avatar,
                                                                          tmp_path, capsys):
    out = tmp_path / "live.mp4"
    code = main(["live", "--avatar", str(live_avatar), "--video", str(short_clip_with_audio), "--no-window",
                 "--display-size", "128", "--render-delay", "100", "-o", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    found = re.search(r"(\d+) shown, (\d+) dropped", text)
    assert int(found.group(2)) >= 10, text  # the slowed renderer dropped frames...
    video_s, frames, audio_s = _streams(out)
    assert frames == 40 and abs(video_s - 1.6) < 0.1, text  # ...and the file still lasts 1.6 s
    assert audio_s is not None and abs(audio_s - 1.6) < 0.1
