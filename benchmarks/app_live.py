"""The app's live tab end to end: frames/s and round trip (frame sent → its rendering received)
through `talkinghead app`'s WebSocket, the way the page drives it.

    python benchmarks/app_live.py                    # the avatar's output size (the live tab's default), 20 s per row
    python benchmarks/app_live.py --seconds 30 --size 256

The server is `talkinghead app --threads 1` in its own process; its session gets an avatar of
scikit-image's astronaut through the HTTP API, as the page does. The client plays a webcam:
640×480 JPEG frames (quality 85, what the page sends) at 30 frames/s, made from the astronaut
avatar driven by the bundled landmark track, and sends the newest one whenever fewer than
``in_flight`` frames await their answer (a camera frame that finds no room is skipped, as the
page does). Rows: one frame in flight (send, wait, send: what the page did before the
WebSocket) and two (the page today: tracking of one frame overlaps the rendering of the other).
Goal (issue 29): >= 15 frames/s with <= 100 ms median round trip at the live tab's default
size on 2 cores. The load average is printed: the machine may be shared.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import os
import struct
import subprocess
import sys
import threading
import time
import urllib.request

import cv2
import numpy as np


def camera_frames(count: int = 60) -> list[bytes]:
    """640×480 JPEGs of a talking face made from what the package ships."""
    from skimage import data

    from talkinghead.infer.avatar import Avatar
    from talkinghead.infer.bundled import ASSETS, BUNDLED_CHECKPOINT
    from talkinghead.infer.reenact import adapt_landmarks

    avatar = Avatar.from_images([data.astronaut()], BUNDLED_CHECKPOINT, finetune_steps=0, device="cpu",
                                progress=False)
    track = np.load(ASSETS / "demo_track.npy")[: 2 * count: 2]
    marks = adapt_landmarks(track, avatar.reference_landmarks, mode="relative", reference=0)
    out = []
    for face in avatar.animate(marks, progress=False):
        picture = np.full((480, 640, 3), 90, np.uint8)
        picture[60:420, 140:500] = cv2.resize(face, (360, 360), interpolation=cv2.INTER_CUBIC)
        out.append(cv2.imencode(".jpg", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])[1]
                   .tobytes())
    return out


class Page:
    """What the page does over HTTP: a session, an uploaded photo, an avatar."""

    def __init__(self, base: str):
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.call("/api/session", {})

    def call(self, path, payload=None, data=None, headers=None):
        body = json.dumps(payload).encode() if payload is not None else data
        request = urllib.request.Request(self.base + path, data=body, headers=headers or
                                         ({"Content-Type": "application/json"} if payload is not None else {}))
        with self.opener.open(request, timeout=300) as response:
            return json.loads(response.read())

    def build_avatar(self, size: int | None) -> None:
        from skimage import data

        photo = cv2.imencode(".jpg", cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))[1].tobytes()
        boundary = "benchmark"
        form = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="astronaut.jpg"\r\n\r\n'
                .encode() + photo + f"\r\n--{boundary}--\r\n".encode())
        upload = self.call("/api/upload?kind=photo", data=form,
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})["upload"]
        job = self.call("/api/avatar", {"uploads": [upload], "steps": 0, "size": size})["job"]
        while (state := self.call(f"/api/job/{job}"))["state"] in ("waiting", "running"):
            time.sleep(0.2)
        if state["state"] != "done":
            raise SystemExit(f"avatar failed: {state}")

    @property
    def cookies(self) -> str:
        return "; ".join(f"{c.name}={c.value}" for c in self.jar)


def drive(page: Page, frames: list[bytes], seconds: float, in_flight: int, camera_fps: float = 30.0) -> dict:
    import websocket

    ws = websocket.create_connection(page.base.replace("http://", "ws://") + "/api/live", cookie=page.cookies,
                                     origin=page.base, timeout=60)
    hello = json.loads(ws.recv())
    assert hello.get("ready"), f"the live socket did not start: {hello}"
    sent: dict[int, float] = {}
    lock = threading.Lock()
    received: list[tuple[float, float]] = []  # (when, round trip ms)
    dropped = {"server": 0, "skipped": 0}
    stop = threading.Event()

    def receive():
        while not stop.is_set():
            try:
                meta = json.loads(ws.recv())
                if "error" in meta:
                    raise SystemExit(f"server: {meta['error']}")
                ws.recv()  # the picture
            except websocket.WebSocketTimeoutException:
                continue
            except (websocket.WebSocketConnectionClosedException, OSError, ValueError):
                if stop.is_set():  # closing: the socket's last messages are read by close()
                    return
                raise
            now = time.perf_counter()
            with lock:
                received.append((now, (now - sent[meta["frame"]]) * 1000))
                for n in [n for n in sent if n <= meta["frame"]]:
                    del sent[n]
                dropped["server"] = meta["dropped"]

    reader = threading.Thread(target=receive, daemon=True)
    reader.start()
    start = time.perf_counter()
    number = 0
    tick = 0
    while time.perf_counter() - start < seconds:
        time.sleep(max(0.0, start + tick / camera_fps - time.perf_counter()))  # the camera's next frame
        frame = frames[tick % len(frames)]
        tick += 1
        with lock:
            room = len(sent) < in_flight
            if room:
                number += 1
                sent[number] = time.perf_counter()
            else:
                dropped["skipped"] += 1
        if room:
            ws.send_binary(struct.pack(">I", number) + frame)
    stop.set()
    reader.join(timeout=2)
    ws.close(timeout=2)
    reader.join(timeout=5)
    warm = [r for r in received if r[0] - start > 2.0]  # the first two seconds warm up
    trips = np.array([ms for _, ms in warm])
    span = warm[-1][0] - warm[0][0] if len(warm) > 1 else float("nan")
    return {"in_flight": in_flight, "fps": (len(warm) - 1) / span if len(warm) > 1 else 0.0,
            "rtt_p50": float(np.percentile(trips, 50)) if len(trips) else float("nan"),
            "rtt_p90": float(np.percentile(trips, 90)) if len(trips) else float("nan"),
            "answered": len(received), "sent": number, "server_dropped": dropped["server"],
            "camera_skipped": dropped["skipped"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="per row (default 20)")
    parser.add_argument("--size", type=int, default=None, help="output size (default: the avatar's, as the live tab)")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen([sys.executable, "-m", "talkinghead.cli", "app", "--port", "0", "--threads", "1"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        line = server.stdout.readline()
        base = line.split(" at ")[1].split()[0].rstrip("/")
        frames = camera_frames()
        page = Page(base)
        page.build_avatar(args.size)
        print(f"load average before: {os.getloadavg()[0]:.1f}")
        print("| in flight | frames/s | round trip median | p90 | answered/sent | dropped by the server | "
              "camera frames skipped |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for in_flight in (1, 2):
            row = drive(page, frames, args.seconds, in_flight)
            print(f"| {in_flight} | {row['fps']:.1f} | {row['rtt_p50']:.0f} ms | {row['rtt_p90']:.0f} ms | "
                  f"{row['answered']}/{row['sent']} | {row['server_dropped']} | {row['camera_skipped']} |", flush=True)
        print(f"load average after: {os.getloadavg()[0]:.1f}")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
