"""`talkinghead app` through its HTTP API and WebSocket (no browser): sessions, jobs, previews,
expressions, live frames, and each hostile request of issue 29's table (rows 1–14)."""

from __future__ import annotations

import http.client
import http.cookiejar
import json
import socket
import struct
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib

import cv2
import numpy as np
import pytest

from talkinghead.webapp.guard import GuardConfig
from talkinghead.webapp.server import AppLimits, AppState, BackgroundServer, ServerOptions, create_app

LIMITS = AppLimits(max_photo_mb=1, max_video_mb=5, max_photo_megapixels=2, max_live_megapixels=1,
                   session_quota_mb=3, max_sessions=64, max_jobs_per_session=2)


def start(tmp_path, limits=LIMITS, guard=None):
    from talkinghead.infer.bundled import BUNDLED_CHECKPOINT

    state = AppState(BUNDLED_CHECKPOINT, tmp_path, limits)
    return state, BackgroundServer(create_app(state, guard), ServerOptions())


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    state, server = start(tmp_path_factory.mktemp("app"))
    yield state, server.url.rstrip("/")
    server.stop()


@pytest.fixture(scope="module")
def server(app):
    return app[1]


class Browser:
    """One user: its own cookie jar; the page's first call makes the session."""

    def __init__(self, base: str, session: bool = True):
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        if session:
            status, body, headers = self.request("/api/session", b"{}", "POST", {"Content-Type": "application/json"})
            assert status == 200, body
            self.cookie_header = headers.get("Set-Cookie", "")

    def request(self, path, data=None, method=None, headers=None):
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers or {})
        try:
            with self.opener.open(req, timeout=120) as response:
                return response.status, response.read(), response.headers
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), exc.headers

    def get(self, path):
        return self.request(path)

    def post_json(self, path, payload):
        status, body, _ = self.request(path, json.dumps(payload).encode(), "POST", {"Content-Type": "application/json"})
        return status, json.loads(body)

    def upload(self, name, data, kind="photo"):
        body, ctype = multipart(name, data)
        status, body, _ = self.request(f"/api/upload?kind={kind}", body, "POST", {"Content-Type": ctype})
        return status, json.loads(body)

    def wait(self, job, until=("done", "error", "cancelled")):
        for _ in range(900):
            state = json.loads(self.get(f"/api/job/{job}")[1])
            if state["state"] in until:
                return state
            time.sleep(0.2)
        raise AssertionError("job did not finish")

    @property
    def cookies(self) -> str:
        return "; ".join(f"{c.name}={c.value}" for c in self.jar)

    def live(self):
        import websocket

        return websocket.create_connection(self.base.replace("http://", "ws://") + "/api/live", cookie=self.cookies,
                                           origin=self.base, timeout=60)


def multipart(name: str, data: bytes) -> tuple[bytes, str]:
    boundary = "talkinghead-test-boundary"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def jpeg(image: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header says ``width``×``height`` (its pixel data is not that big)."""
    png = bytearray(cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    png[16:24] = struct.pack(">II", width, height)  # IHDR data starts at byte 16
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    return bytes(png)


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose frame header (SOF0) says ``width``×``height``."""
    data = bytearray(jpeg(np.zeros((8, 8, 3), np.uint8)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def raw_request(url: str, head: bytes, body: bytes = b"", wait: float = 10.0) -> bytes:
    """Send ``head`` (and ``body``) on a fresh socket; what the server answered within ``wait`` s."""
    host, port = urllib.parse.urlsplit(url).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        sock.sendall(head + body)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks) and b'"}' in chunks[-1]:
                    break
        except (socket.timeout, ConnectionResetError):
            pass
    return b"".join(chunks)


@pytest.fixture(scope="module")
def astronaut_jpeg():
    from skimage import data

    return jpeg(data.astronaut())


@pytest.fixture(scope="module")
def alice(server, astronaut_jpeg):
    """A user with an FF avatar of the astronaut at 256 px."""
    user = Browser(server)
    status, up = user.upload("astronaut.jpg", astronaut_jpeg)
    assert status == 200, up
    status, started = user.post_json("/api/avatar", {"uploads": [up["upload"]], "steps": 0, "size": 256})
    assert status == 200, started
    job = user.wait(started["job"])
    assert job["state"] == "done", job
    user.avatar_job = job
    return user


def test_page_makes_no_session_only_the_session_route_does(app):
    """Row 4: a request without a cookie (any web page can send one) makes no session."""
    state, server = app
    before = len(state.sessions)
    with urllib.request.urlopen(server + "/") as response:
        assert b"talkinghead" in response.read() and "Set-Cookie" not in response.headers
    user = Browser(server, session=False)
    status, body, _ = user.request("/api/upload?kind=photo", b"x", "POST")
    assert status == 401 and "reload the page" in json.loads(body)["error"]
    assert user.post_json("/api/avatar", {"uploads": ["x"]})[0] == 401
    assert len(state.sessions) == before
    user = Browser(server)
    assert "HttpOnly" in user.cookie_header and "SameSite=strict" in user.cookie_header
    assert len(state.sessions) == before + 1


def test_sessions_full_is_503_and_empty_ones_expire_fast(tmp_path):
    state, server = start(tmp_path, AppLimits(max_sessions=2))
    try:
        base = server.url.rstrip("/")
        first = Browser(base)
        Browser(base)
        status, body, _ = Browser(base, session=False).request("/api/session", b"{}", "POST")
        assert status == 503 and "already has 2 users" in json.loads(body)["error"]
        assert urllib.request.urlopen(base + "/").status == 200  # the page itself still loads
        for session in state.sessions:  # two empty sessions, idle for 3 minutes
            session.last_seen -= 180
        assert Browser(base).get("/api/limits")[0] == 200  # room again: the empty ones expired
        assert first.get("/api/job/x")[0] == 401 and len(state.sessions) == 1
    finally:
        server.stop()


def test_avatar_still_turn_expression_download_and_isolation(alice, server, tmp_path):
    """Item 4: the app shows the avatar it built (a still and a head turn) at the asked size;
    expression sliders render; other sessions see none of it."""
    from PIL import Image

    from talkinghead.infer.avatar import Avatar

    result = alice.avatar_job["result"]
    assert result["size"] == 256 and result["network_size"] == 128
    status, body, headers = alice.get(result["still"])
    still = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert status == 200 and still.shape == (256, 256, 3) and still.std() > 20
    status, body, headers = alice.get(result["turn"])
    (tmp_path / "turn.webp").write_bytes(body)
    with Image.open(tmp_path / "turn.webp") as turn:
        assert turn.n_frames >= 10 and turn.size == (256, 256)
        turn.seek(4)  # about 25° of yaw: the face has moved
        turned = np.asarray(turn.convert("RGB"))
    assert np.abs(turned.astype(int) - cv2.cvtColor(still, cv2.COLOR_BGR2RGB)).mean() > 5
    status, body, headers = alice.request("/api/expression", json.dumps({"eyes": 0, "smile": 0.6}).encode(), "POST",
                                          {"Content-Type": "application/json"})
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    changed = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert changed.shape == (256, 256, 3) and np.abs(changed.astype(int) - still).mean() > 1
    assert alice.post_json("/api/expression", {"eyes": -1})[0] == 400
    assert alice.post_json("/api/expression", {"grin": 1})[0] == 400
    status, body, headers = alice.get("/api/avatar.avatar")
    assert status == 200 and "attachment" in headers["Content-Disposition"]
    (tmp_path / "a.avatar").write_bytes(body)
    assert Avatar.load(tmp_path / "a.avatar").size == 128
    bob = Browser(server)
    assert bob.get("/api/avatar.avatar")[0] == 404
    assert bob.get(result["still"])[0] == 404
    assert bob.get(f"/api/job/{alice.avatar_job['id']}")[0] == 404
    assert bob.post_json("/api/expression", {"eyes": 0})[0] == 400  # no avatar yet


def test_live_websocket_renders_drops_and_refuses_huge_frames(alice, server, rendered_driver):
    """Live frames over the WebSocket; a frame arriving while another waits is dropped, not
    queued; a 20000×20000 PNG is refused from its header (row 2) and the socket keeps working."""
    from talkinghead.data.video import read_frames

    frames = [jpeg(f) for f in read_frames(rendered_driver, max_frames=12)]
    ws = alice.live()
    try:
        assert json.loads(ws.recv())["ready"]
        ws.send_binary(struct.pack(">I", 1) + frames[0])
        meta, picture = json.loads(ws.recv()), ws.recv()
        assert meta["frame"] == 1 and meta["face"] == "ok"
        rendered = cv2.imdecode(np.frombuffer(picture, np.uint8), cv2.IMREAD_COLOR)
        assert rendered.shape == (256, 256, 3) and rendered.std() > 10
        started = time.perf_counter()
        ws.send_binary(struct.pack(">I", 2) + png_claiming(20000, 20000))
        refused = json.loads(ws.recv())
        assert refused["frame"] == 2 and "larger than this server takes" in refused["error"]
        assert time.perf_counter() - started < 5  # nothing was decoded
        for n, data in enumerate(frames, start=3):  # 12 frames at once
            ws.send_binary(struct.pack(">I", n) + data)
        answered = []
        while not answered or answered[-1]["frame"] < 2 + len(frames):
            message = json.loads(ws.recv())
            answered.append(message)
            ws.recv()
        numbers = [m["frame"] for m in answered]
        assert numbers == sorted(numbers) and len(numbers) < len(frames)
        assert answered[-1]["dropped"] == len(frames) - len(numbers)
        ws.send(json.dumps({"reset": True}))
        ws.send_binary(struct.pack(">I", 99) + frames[0])
        assert json.loads(ws.recv())["face"] == "ok"
        ws.recv()
        newer = alice.live()  # the page reopened: the newer socket takes the live view over
        try:
            assert "opened again" in json.loads(ws.recv())["error"]
            assert json.loads(newer.recv())["ready"]
        finally:
            newer.close()
    finally:
        ws.close()
    other = Browser(server).live()  # a session without an avatar is told so
    try:
        assert "build an avatar first" in json.loads(other.recv())["error"]
    finally:
        other.close()


def test_upload_errors_deleted_rejects_long_names_and_quota(app, astronaut_jpeg):
    """Rows 3, 6, 13: pixel cap from the header, rejected files removed, a per-session quota,
    long names keep their extension."""
    state, server = app
    user = Browser(server)
    session = state.sessions.get(next(c.value for c in user.jar))
    status, err = user.upload("notes.txt", b"hello")
    assert status == 400 and err["error"] == "notes.txt: not a supported file type (use bmp, jpeg, jpg, png, webp)"
    status, err = user.upload("fake.jpg", b"this is not a jpeg")
    assert status == 400 and err["error"].startswith("fake.jpg: not a readable image")
    started = time.perf_counter()
    status, err = user.upload("huge.jpg", jpeg_claiming(12000, 12000))  # 144 megapixels
    assert status == 400 and "144 megapixels" in err["error"] and time.perf_counter() - started < 5
    status, err = user.upload("big.jpg", b"\xff" * (2 * 2**20))
    assert status == 413 and "too large" in err["error"]
    assert session.used_bytes == 0 and not any(p.is_file() for p in (session.folder / "uploads").rglob("*"))
    long_name = "a" * 150 + ".jpg"
    status, up = user.upload(long_name, astronaut_jpeg)
    assert status == 200 and up["name"].endswith(".jpg") and len(up["name"]) <= 100
    noise = np.random.default_rng(0).integers(0, 255, (560, 560, 3), np.uint8)
    photo = cv2.imencode(".png", noise)[1].tobytes()  # about 0.9 MB
    results = [user.upload(f"noise{i}.png", photo)[0] for i in range(4)]
    assert results[:3] == [200, 200, 200] and results[3] == 413  # 3 MB quota
    assert session.used_bytes <= 3 * 2**20


def test_job_queue_limit_and_cancel(app, astronaut_jpeg):
    """Row 5: at most 2 jobs per session waiting or running; a job can be cancelled."""
    state, server = app
    user = Browser(server)
    status, up = user.upload("astronaut.jpg", astronaut_jpeg)
    jobs = [user.post_json("/api/avatar", {"uploads": [up["upload"]], "steps": 400}) for _ in range(3)]
    assert [s for s, _ in jobs] == [200, 200, 429] and "at most 2" in jobs[2][1]["error"]
    first, second = jobs[0][1]["job"], jobs[1][1]["job"]
    user.wait(first, until=("running",))
    status, cancelled = user.post_json(f"/api/job/{second}/cancel", {})
    assert status == 200 and cancelled["state"] == "cancelled"  # it was waiting
    for _ in range(100):  # running: stops at its next step
        if json.loads(user.get(f"/api/job/{first}")[1])["stage"] == "fine-tuning":
            break
        time.sleep(0.1)
    assert user.post_json(f"/api/job/{first}/cancel", {})[0] == 200
    assert user.wait(first)["state"] == "cancelled"
    assert user.post_json("/api/avatar", {"uploads": [up["upload"]], "steps": 0})[0] == 200  # room again


def test_content_length_rules(server):
    """Rows 1 and 10: a bad, missing or too large Content-Length is answered before the body
    is read; a large body to an unknown route gets a clean JSON reply."""
    host = urllib.parse.urlsplit(server).netloc
    user = Browser(server)
    head = (f"POST /api/upload?kind=photo HTTP/1.1\r\nHost: {host}\r\nCookie: {user.cookies}\r\n"
            "Content-Type: multipart/form-data; boundary=x\r\n")
    answer = raw_request(server, (head + "Content-Length: -1\r\n\r\n").encode(), b"x" * 1000)
    assert answer.startswith(b"HTTP/1.1 400")
    answer = raw_request(server, (head + "Content-Length: -100\r\n\r\n").encode())
    assert answer.startswith(b"HTTP/1.1 400")
    answer = raw_request(server, (head + "Transfer-Encoding: chunked\r\n\r\n").encode(), b"5\r\nhello\r\n")
    assert answer.startswith(b"HTTP/1.1 411")
    answer = raw_request(server, (head + "\r\n").encode())  # no length at all
    assert answer.startswith(b"HTTP/1.1 411")
    started = time.perf_counter()  # 31.5 MB announced, 10 bytes sent: the answer does not wait for the rest
    answer = raw_request(server, (head + f"Content-Length: {int(31.5 * 2**20)}\r\n\r\n").encode(), b"x" * 10)
    assert answer.startswith(b"HTTP/1.1 413") and time.perf_counter() - started < 5
    connection = http.client.HTTPConnection(host, timeout=60)
    connection.request("POST", "/api/nothing", body=b"x" * (10 * 2**20), headers={"Content-Type": "text/plain"})
    response = connection.getresponse()
    assert response.status in (404, 413) and "error" in json.loads(response.read())
    connection.close()
    connection = http.client.HTTPConnection(host, timeout=60)
    connection.request("POST", "/api/upload?kind=evil", body=b"x" * 1000,
                       headers={"Cookie": user.cookies, "Content-Type": "multipart/form-data; boundary=x"})
    response = connection.getresponse()
    assert response.status == 400 and "kind=evil" in json.loads(response.read())["error"]
    assert urllib.request.urlopen(server + "/").status == 200  # still serving


def test_slow_clients_are_disconnected(server, monkeypatch):
    """Row 7: partial headers held past the deadline (slow-loris) close the connection."""
    from talkinghead.webapp.guard import GuardedH11Protocol

    monkeypatch.setattr(GuardedH11Protocol, "header_timeout", 1.0)
    host, port = urllib.parse.urlsplit(server).netloc.split(":")
    sockets = []
    started = time.perf_counter()
    for _ in range(5):
        sock = socket.create_connection((host, int(port)), timeout=10)
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nX-Slow: ".encode())
        sockets.append(sock)
    for sock in sockets:
        assert sock.recv(100) == b""  # closed by the server
        sock.close()
    assert time.perf_counter() - started < 8
    assert urllib.request.urlopen(server + "/").status == 200


@pytest.mark.parametrize("body", [b'{"uploads": ["\xff"]}', b"[" * 10000, b'{"steps": Infinity}', b'{"steps": NaN}',
                                  b'{"steps": 1e400}', b'{"steps": ' + b"9" * 5000 + b"}", b"[1, 2]"])
def test_malformed_json_is_400(server, body):
    """Row 9."""
    user = Browser(server)
    status, answer, _ = user.request("/api/avatar", body, "POST", {"Content-Type": "application/json"})
    assert status == 400 and "JSON" in json.loads(answer)["error"]


def test_host_and_origin_are_checked(server, astronaut_jpeg):
    """Row 11: a DNS-rebinding page (foreign Host) and a cross-site page (foreign Origin) are refused."""
    import websocket

    host = urllib.parse.urlsplit(server).netloc
    port = host.split(":")[1]
    answer = raw_request(server, f"GET /api/limits HTTP/1.1\r\nHost: evil.example:{port}\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 421")
    user = Browser(server)
    status, up = user.upload("astronaut.jpg", astronaut_jpeg)
    status, body, _ = user.request("/api/avatar", json.dumps({"uploads": [up["upload"]]}).encode(), "POST",
                                   {"Content-Type": "text/plain", "Origin": "http://evil.example"})
    assert status == 403 and "cross-origin" in json.loads(body)["error"]
    status, body, _ = user.request("/api/session", b"{}", "POST", {"Origin": f"http://{host}"})
    assert status == 200  # the page's own origin
    with pytest.raises(websocket.WebSocketException):
        ws = websocket.create_connection(server.replace("http", "ws") + "/api/live", cookie=user.cookies,
                                         origin="http://evil.example", timeout=10)
        ws.recv()


def test_token_when_not_on_loopback(tmp_path):
    """Item 3: a server given a token (any --host but loopback) answers only with it; the page loads."""
    state, server = start(tmp_path, guard=GuardConfig(host_names={"127.0.0.1"}, token="open-sesame-123"))
    try:
        base = server.url.rstrip("/")
        assert urllib.request.urlopen(base + "/").status == 200  # the page, which asks for the token
        user = Browser(base, session=False)
        status, body, _ = user.request("/api/session", b"{}", "POST")
        assert status == 401 and json.loads(body)["login"] is True
        assert user.post_json("/api/login", {"token": "wrong"})[0] == 401
        assert user.post_json("/api/login", {"token": "open-sesame-123"})[0] == 200
        assert user.request("/api/session", b"{}", "POST")[0] == 200
        assert user.get("/api/limits")[0] == 200
    finally:
        server.stop()


def test_video_job_notes_damaged_frames(alice, rendered_driver, tmp_path):
    """Row 12: what the decoder skipped reaches the user in the job's notes; the video has the
    driver's audio."""
    import av

    from talkinghead.data.video import read_frames

    damaged = tmp_path / "damaged.mp4"
    data = bytearray(rendered_driver.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4000] = bytes(4000)  # a stretch of packets zeroed
    damaged.write_bytes(bytes(data))
    status, up = alice.upload("damaged.mp4", bytes(data), kind="video")
    assert status == 200, up
    status, started = alice.post_json("/api/video", {"upload": up["upload"], "side_by_side": True})
    job = alice.wait(started["job"])
    assert job["state"] == "done", job
    assert any("damaged frame" in note for note in job["notes"]), job["notes"]
    assert job["result"]["frames"] < 48
    status, body, headers = alice.get(job["result"]["download"])
    assert status == 200 and headers["Content-Type"] == "video/mp4"
    (tmp_path / "out.mp4").write_bytes(body)
    assert read_frames(tmp_path / "out.mp4").shape[0] == job["result"]["frames"]
    with av.open(str(tmp_path / "out.mp4")) as container:
        assert container.streams.audio


def test_errors_map_to_statuses_by_class():
    from talkinghead.errors import NoFaceError, TalkingHeadError
    from talkinghead.webapp.server import status_for
    from talkinghead.webapp.sessions import QuotaExceeded, SessionsFull, TooManyJobs

    assert status_for(NoFaceError("x")) == 422
    assert status_for(TalkingHeadError("no face here, but not a NoFaceError")) == 400
    assert [status_for(e("x")) for e in (SessionsFull, QuotaExceeded, TooManyJobs)] == [503, 413, 429]


def test_safe_names_keep_their_extension():
    from talkinghead.webapp.sessions import safe_name

    assert safe_name("x" * 300 + ".jpeg") == "x" * 95 + ".jpeg"
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("a/b\\c<d>.png") == "c_d_.png"


@pytest.mark.parametrize("option", [["--max-photo-mb", "nan"], ["--max-photo-mb", "-1"], ["--max-steps", "-5"],
                                    ["--port", "99999"], ["--threads", "-1"], ["--max-sessions", "0"],
                                    ["--max-video-mb", "inf"]])
def test_app_options_are_validated(option, capsys):
    """Row 14: one line, exit 2."""
    from talkinghead.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["app", *option])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and option[0] in err


def test_short_token_is_refused(capsys):
    from talkinghead.cli import main

    assert main(["app", "--host", "0.0.0.0", "--token", "short"]) == 2
    assert "--token" in capsys.readouterr().err


@pytest.mark.parametrize("signal_name, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_signal_while_a_job_runs_exits_cleanly(signal_name, code, start_process, astronaut_jpeg):
    """Row 8: Ctrl-C or SIGTERM while an avatar is being fine-tuned: the job is cancelled and
    joined, the exit status is 130/143 (no SIGABRT)."""
    import os
    import signal
    import sys

    proc = start_process([sys.executable, "-m", "talkinghead.cli", "app", "--port", "0", "--threads", "1"],
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    line = proc.stdout.readline()
    assert "talkinghead app at http://127.0.0.1:" in line, proc.stderr.read()
    user = Browser(line.split(" at ")[1].split()[0].rstrip("/"))
    status, up = user.upload("astronaut.jpg", astronaut_jpeg)
    status, started = user.post_json("/api/avatar", {"uploads": [up["upload"]], "steps": 400})
    for _ in range(300):
        if json.loads(user.get(f"/api/job/{started['job']}")[1])["stage"] == "fine-tuning":
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the job did not start fine-tuning")
    proc.send_signal(getattr(signal, signal_name))
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert "server stopped" in stderr and "Traceback" not in stderr and "terminate called" not in stderr
