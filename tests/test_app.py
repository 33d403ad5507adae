"""`talkinghead app` through its HTTP API (no browser): sessions, limits, errors, jobs."""

from __future__ import annotations

import http.cookiejar
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from talkinghead.webapp.server import App, AppLimits, make_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from talkinghead.infer.bundled import BUNDLED_CHECKPOINT

    app = App(BUNDLED_CHECKPOINT, tmp_path_factory.mktemp("app"), AppLimits(max_photo_mb=1, max_video_mb=5))
    httpd = make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    app.sessions.close_all()


class Browser:
    """One user: its own cookie jar."""

    def __init__(self, base: str):
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        self.get("/")

    def request(self, path, data=None, method=None, headers=None):
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers or {})
        try:
            with self.opener.open(req, timeout=120) as response:
                return response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), dict(exc.headers)

    def get(self, path):
        return self.request(path)

    def post_json(self, path, payload):
        status, body, _ = self.request(path, json.dumps(payload).encode(), "POST", {"Content-Type": "application/json"})
        return status, json.loads(body)

    def upload(self, name, data, kind="photo"):
        status, body, _ = self.request(f"/api/upload?kind={kind}&name={urllib.parse.quote(name)}", data, "POST")
        return status, json.loads(body)

    def wait(self, job):
        for _ in range(600):
            status, body, _ = self.get(f"/api/job/{job}")
            state = json.loads(body)
            if state["state"] in ("done", "error"):
                return state
            time.sleep(0.2)
        raise AssertionError("job did not finish")


def _jpeg(image: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()


@pytest.fixture(scope="module")
def astronaut_jpeg():
    from skimage import data

    return _jpeg(data.astronaut())


def test_page_and_cookie(server):
    with urllib.request.urlopen(server + "/") as response:
        assert b"talkinghead" in response.read()
        assert "talkinghead_session=" in response.headers["Set-Cookie"]


def test_avatar_download_and_live_frame_per_session(server, astronaut_jpeg, shared_faces, tmp_path):
    from talkinghead.data.video import read_frames
    from talkinghead.infer.avatar import Avatar

    alice, bob = Browser(server), Browser(server)
    status, up = alice.upload("astronaut.jpg", astronaut_jpeg)
    assert status == 200
    status, started = alice.post_json("/api/avatar", {"uploads": [up["upload"]], "steps": 0})
    assert status == 200
    job = alice.wait(started["job"])
    assert job["state"] == "done", job
    status, body, headers = alice.get("/api/avatar.avatar")
    assert status == 200 and "attachment" in headers["Content-Disposition"]
    (tmp_path / "a.avatar").write_bytes(body)
    assert Avatar.load(tmp_path / "a.avatar").size == 128
    # Bob sees none of it: no avatar, no job, and Alice's upload id is not his.
    assert bob.get("/api/avatar.avatar")[0] == 404
    assert bob.get(f"/api/job/{started['job']}")[0] == 404
    status, err = bob.post_json("/api/avatar", {"uploads": [up["upload"]], "steps": 0})
    assert status == 400 and "another session" in err["error"]
    frame = read_frames(shared_faces / "clips/eamm_disgusted.mp4", max_frames=1)[0]
    status, body, _ = bob.request("/api/live/frame", _jpeg(frame), "POST")
    assert status == 409 and "build an avatar first" in json.loads(body)["error"]
    status, body, headers = alice.request("/api/live/frame", _jpeg(frame), "POST")
    assert status == 200 and headers["X-Face"] == "ok"
    rendered = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert rendered.shape == (128, 128, 3) and rendered.std() > 10
    blank = np.full_like(frame, 80)
    status, body, headers = alice.request("/api/live/frame", _jpeg(blank), "POST")
    assert status == 200 and headers["X-Face"] in ("ok", "lost")  # lost once the detector checks


def test_bad_inputs_are_explained_and_server_keeps_running(server, tmp_path):
    user = Browser(server)
    status, err = user.upload("notes.txt", b"hello")
    assert status == 400 and err["error"] == "notes.txt: not a supported file type (use bmp, jpeg, jpg, png, webp)"
    status, err = user.upload("fake.jpg", b"this is not a jpeg")
    assert status == 400 and err["error"].startswith("fake.jpg: ") and "/" not in err["error"].split(":")[0]
    status, err = user.upload("big.jpg", b"\xff" * (2 * 2**20))
    assert status == 413 and "upload too large" in err["error"]
    status, up = user.upload("wall.png", _jpeg(np.full((200, 200, 3), 128, np.uint8)))
    assert status == 200
    status, started = user.post_json("/api/avatar", {"uploads": [up["upload"]], "steps": 0})
    job = user.wait(started["job"])
    assert job["state"] == "error" and job["error"] == "wall.png: no face found"
    status, err = user.post_json("/api/avatar", {"uploads": [up["upload"]], "steps": 10_000})
    assert status == 400 and "steps=10000" in err["error"]
    assert user.get("/api/nothing")[0] == 404
    assert user.get("/")[0] == 200  # still serving


def test_several_faces_are_reported(server, astronaut_jpeg):
    from skimage import data

    user = Browser(server)
    face = np.ascontiguousarray(data.astronaut()[:300, 100:400])
    pair = np.concatenate([face, face[:, ::-1]], axis=1)  # two faces side by side
    status, up = user.upload("two people.jpg", _jpeg(pair))
    assert status == 200
    status, started = user.post_json("/api/avatar", {"uploads": [up["upload"]], "steps": 0})
    job = user.wait(started["job"])
    assert job["state"] == "done", job
    assert job["notes"] == ["two people.jpg: 2 faces, picked the largest"]


def test_fine_tuned_avatar_and_pasted_back_video(server, astronaut_jpeg, shared_faces, tmp_path):
    import av

    from talkinghead.data.video import read_frames, write_video

    user = Browser(server)
    status, up = user.upload("astronaut.jpg", astronaut_jpeg)
    status, started = user.post_json("/api/avatar", {"uploads": [up["upload"]], "steps": 2})
    job = user.wait(started["job"])
    assert job["state"] == "done" and job["result"]["steps"] == 2, job
    clip = shared_faces / "clips/eamm_disgusted.mp4"
    driving = tmp_path / "driving.mp4"
    write_video(driving, read_frames(clip, max_frames=12), 25, audio_from=clip)
    status, up = user.upload("driving.mp4", driving.read_bytes(), kind="video")
    assert status == 200
    status, started = user.post_json("/api/video", {"upload": up["upload"], "paste_back": True})
    job = user.wait(started["job"])
    assert job["state"] == "done", job
    status, body, headers = user.get(job["result"]["download"])
    assert status == 200 and headers["Content-Type"] == "video/mp4"
    (tmp_path / "out.mp4").write_bytes(body)
    frames = read_frames(tmp_path / "out.mp4")
    assert frames.shape == (12, 512, 512, 3)  # pasted back into the 512×512 photo
    with av.open(str(tmp_path / "out.mp4")) as container:
        assert container.streams.audio


def test_progress_is_routed_to_the_job_thread_only():
    from talkinghead.webapp import progress

    progress.install()
    import talkinghead.train.finetune as finetune_module

    seen = []
    def work():
        with progress.report_to(lambda stage, done, total: seen.append((stage, done, total))):
            for _ in finetune_module.tqdm(range(3), desc="fine-tuning", disable=True):
                pass

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    for _ in finetune_module.tqdm(range(3), desc="elsewhere", disable=True):  # no callback here: plain tqdm
        pass
    assert seen[0] == ("fine-tuning", 0, 3) and seen[-1] == ("fine-tuning", 3, 3)
    assert all(stage == "fine-tuning" for stage, _, _ in seen)


def test_app_command_stops_cleanly_on_sigterm(tmp_path, start_process):
    import signal
    import sys

    proc = start_process([sys.executable, "-m", "talkinghead.cli", "app", "--port", "0"])
    line = proc.stdout.readline()
    assert "talkinghead app at http://127.0.0.1:" in line
    url = line.split(" at ")[1].split()[0]
    assert b"talkinghead" in urllib.request.urlopen(url, timeout=30).read()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143 and "server stopped" in stderr and "Traceback" not in stderr
