"""Live driving: a camera (or a video file standing in for one) drives an avatar in real time.

Three stages run in their own threads and hand work on through one-slot mailboxes that keep
only the newest item, so a slow stage makes the pipeline *drop* frames instead of falling
behind (latency stays bounded; the dropped frames are counted):

    capture ──[slot]──▶ track + adapt + smooth ──[slot]──▶ render ──[slot]──▶ show (caller)

Every frame carries its capture time; latency is "captured → shown". When the driver's face
is lost the last good pose is held (and the shown frame says so); before any face was seen
the avatar keeps its own pose.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import cv2
import numpy as np
import torch

from talkinghead.data.tracking import FaceTracker
from talkinghead.data.sketch import landmarks_to_sketch, sketch_to_tensor
from talkinghead.errors import TalkingHeadError
from talkinghead.infer.reenact import adapt_landmarks
from talkinghead.infer.smoothing import LandmarkSmoother, face_scale

log = logging.getLogger(__name__)


# -- frame sources ----------------------------------------------------------------------------

@dataclass
class Frame:
    """One captured driver frame and what the stages learned about it."""

    index: int
    captured: float  # time.perf_counter() when it was captured
    image: np.ndarray  # (H, W, 3) uint8 RGB
    #: Seconds into the source: a file's frame number / fps (frames the reader was late for
    #: count), a camera's time since its first frame. Its place in a recording.
    time: float = 0.0
    landmarks: np.ndarray | None = None  # (68, 2) adapted to the avatar's crop
    face: str = "ok"  # "ok", "lost" (last good pose held) or "none" (no face seen yet)
    rendered: np.ndarray | None = None  # (S, S, 3) uint8 RGB


class VideoFileSource:
    """Frames of a video file at its native rate, as a camera would deliver them (a frame the
    reader is too late for is skipped and counted in ``skipped``), or as fast as they decode
    with ``realtime=False``. ``loop`` restarts the file at its end. ``position``: the last
    delivered frame's time in the file, in seconds (continuing over loops)."""

    def __init__(self, path, realtime: bool = True, loop: bool = False):
        from talkinghead.data.video import probe_video

        self.path, self.realtime, self.loop = path, realtime, loop
        self.fps = probe_video(path).fps or 25.0
        self.skipped = 0
        self.position = 0.0

    def __iter__(self) -> Iterator[np.ndarray]:
        from talkinghead.data.video import iter_frames

        period = 1.0 / self.fps
        start = time.perf_counter()
        tick = 0
        while True:
            for image in iter_frames(self.path):
                number, tick = tick, tick + 1
                if self.realtime:
                    delay = start + number * period - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    elif delay < -period:  # more than a frame late: a camera would have dropped it
                        self.skipped += 1
                        continue
                self.position = number * period
                yield image
            if not self.loop:
                return


def camera_frames(device: int | str) -> Iterator[np.ndarray]:
    """Frames of camera ``device`` (an index) or of a stream URL through OpenCV, as RGB."""
    capture = cv2.VideoCapture(device)
    if not capture.isOpened():
        what = f"camera {device}" if isinstance(device, int) else str(device)
        raise TalkingHeadError(f"{what}: cannot be opened (is it connected, reachable and free?)")
    try:
        while True:
            ok, bgr = capture.read()
            if not ok:
                return
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()


# -- mailbox ----------------------------------------------------------------------------------

class LatestSlot:
    """A one-item mailbox: ``put`` replaces an item nobody took (counting it as dropped)."""

    def __init__(self):
        self._item = None
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0

    def put(self, item) -> None:
        with self._cond:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self._cond.notify_all()

    def take(self, timeout: float = 0.1):
        """The newest item, or None after ``timeout`` s (or once closed and empty)."""
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed_and_empty(self) -> bool:
        with self._cond:
            return self._closed and self._item is None


class LiveDriver:
    """Driver frame → the avatar's landmarks: track (:class:`~talkinghead.data.tracking.FaceTracker`,
    the one ``prepare`` and ``animate`` use, with the detector's check every ``verify_every``
    frames), smooth (One-Euro), adapt (relative mode with the first good frame as the driver's
    neutral face, or absolute). When the face is lost it holds the last pose the detector
    confirmed (frames tracked since then may already have slipped off the face). One per live
    session: it keeps the driver's state; ``tracker.stats`` counts frames by tracking status."""

    def __init__(self, avatar_landmarks: np.ndarray, detector, mode: str = "relative",
                 smoothing: bool = True, min_cutoff: float = 1.5, beta: float = 1.0, verify_every: int = 3):
        self.avatar_landmarks = np.asarray(avatar_landmarks, np.float32)
        # A camera's face may come back any frame: look for it in every frame while it is lost.
        self.tracker = FaceTracker(detector, verify_every=verify_every, max_retry_gap=0)
        self.mode = mode
        self.smoothing = smoothing
        self.min_cutoff, self.beta = min_cutoff, beta
        self.reference: np.ndarray | None = None  # driver's neutral face (68, 2)
        self.filter: LandmarkSmoother | None = None
        self.last_confirmed: np.ndarray | None = None  # adapted landmarks of the last verified frame
        self.last_time: float | None = None
        self.lost_frames = 0

    def reset_reference(self) -> None:
        """Take the next good frame as the driver's neutral face."""
        self.reference = None

    def __call__(self, image: np.ndarray, timestamp: float) -> tuple[np.ndarray, str]:
        """Returns ((68, 2) landmarks in the avatar's crop, face state "ok"/"lost"/"none")."""
        tracked = self.tracker(image)
        points, confirmed = tracked.landmarks, tracked.confirmed
        if points is None:
            self.lost_frames += 1
            if self.last_confirmed is None:
                return self.avatar_landmarks.copy(), "none"
            return self.last_confirmed.copy(), "lost"
        if self.reference is None:
            self.reference = points.copy()
            self.filter = LandmarkSmoother(face_scale(points), self.min_cutoff, self.beta)
        dt = 1 / 25 if self.last_time is None else max(timestamp - self.last_time, 1e-3)
        self.last_time = timestamp
        if self.smoothing:
            points = self.filter(points, dt).astype(np.float32)
        pair = np.stack([self.reference, points])
        adapted = adapt_landmarks(pair, self.avatar_landmarks, mode=self.mode, reference=0)[1]
        if confirmed:
            self.last_confirmed = adapted
        return adapted.copy(), "ok"


# -- rendering --------------------------------------------------------------------------------

class ShotCrossFade:
    """The ``shot_bias`` of frames rendered one at a time, in order: shots cross-faded over
    consecutive frames as :meth:`Avatar.animate` does (its state: the last frame's smoothed shot
    distances). ``enabled=False`` (``--no-smooth``): shots picked frame by frame."""

    def __init__(self, module, enabled: bool = True):
        self.module, self.enabled = module, enabled
        self.smoothed = None  # (K,)

    @torch.inference_mode()
    def __call__(self, landmarks: torch.Tensor) -> torch.Tensor | None:
        """(1, 68, 2) → (1, K) bias, or None (disabled, or no choice of shot)."""
        if not self.enabled:
            return None
        bias, self.smoothed = self.module.smoothing_bias(landmarks, self.smoothed)
        return bias


def draw_mouth(avatar, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """A rendered (O, O, 3) frame with the avatar's mouth interior drawn for its (68, 2) crop
    landmarks (:meth:`Avatar.draw_mouths`; nothing where no shot is out-opened)."""
    scale = image.shape[0] / avatar.size
    marks = (np.asarray(landmarks, np.float64)[None] + 0.5) * scale - 0.5
    return avatar.draw_mouths(np.ascontiguousarray(image)[None], marks, enlarged=scale)[0]


class _MouthFinishing:
    """What both live renderers share: ``render(landmarks)`` (the face without its mouth
    interior, theirs) and ``finish`` (the interior, a separate step so that the live pipeline
    can run it on the next frame's time, beside the next render); calling one does both."""

    def finish(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        return draw_mouth(self.avatar, image, landmarks)

    def __call__(self, landmarks: np.ndarray) -> np.ndarray:
        return self.finish(self.render(landmarks), landmarks)


class TorchRenderer(_MouthFinishing):
    """(68, 2) landmarks → (O, O, 3) uint8 with an avatar's :meth:`Avatar.sized_renderer` module
    (O: ``size``, default the avatar's output size)."""

    def __init__(self, avatar, cross_fade: bool = True, size: int | None = None):
        self.size = avatar.size  # the sketch's: the network's size
        self.output_size = avatar.check_size(size)
        self.module = avatar.sized_renderer(self.output_size).to("cpu").eval()
        self.shot_bias = ShotCrossFade(avatar.renderer().to("cpu").eval(), cross_fade)
        self.avatar = avatar  # draws mouth interiors on the finished frames

    @torch.inference_mode()
    def render(self, landmarks: np.ndarray) -> np.ndarray:
        """The face without its mouth interior (:meth:`finish` adds it)."""
        sketch = sketch_to_tensor(landmarks_to_sketch(landmarks, self.size))[None]
        marks = torch.from_numpy(np.asarray(landmarks, np.float32))[None]
        out = self.module(sketch, marks, self.shot_bias(marks))[0]
        return ((out.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()


class OnnxAvatarRenderer(_MouthFinishing):
    """The same with onnxruntime: the avatar's renderer is exported to a temporary ONNX file
    (about 2.5× PyTorch's frames/s at 128 px on one CPU thread; needs the [app] extra)."""

    def __init__(self, avatar, threads: int = 1, cross_fade: bool = True, size: int | None = None):
        import tempfile

        from talkinghead.infer.onnx_export import OnnxRenderer, export_onnx

        self.size = avatar.size  # the sketch's: the network's size
        self.output_size = avatar.check_size(size)
        with tempfile.TemporaryDirectory(prefix="talkinghead-onnx-") as folder:
            path = export_onnx(avatar, f"{folder}/avatar.onnx", size=self.output_size)
            self.runtime = OnnxRenderer(path, threads=threads)  # the session keeps the model in memory
        self.shot_bias = ShotCrossFade(avatar.renderer().to("cpu").eval(), cross_fade)
        self.avatar = avatar  # draws mouth interiors beside the graph

    def render(self, landmarks: np.ndarray) -> np.ndarray:
        """The face without its mouth interior (:meth:`finish` adds it)."""
        sketch = sketch_to_tensor(landmarks_to_sketch(landmarks, self.size))[None].numpy()
        marks = np.asarray(landmarks, np.float32)[None]
        bias = self.shot_bias(torch.from_numpy(marks))
        out = self.runtime(sketch, marks, None if bias is None else bias.numpy())[0]
        return ((np.clip(out, -1, 1) + 1) * 127.5).round().astype(np.uint8).transpose(1, 2, 0)


# -- the pipeline -----------------------------------------------------------------------------

@dataclass
class LiveStats:
    captured: int = 0  # frames read from the source
    late: int = 0  # frames a video file delivered while the reader was still busy (skipped, as by a camera)
    shown: int = 0
    dropped: int = 0  # frames captured but never shown (overtaken by newer ones), plus the late ones
    face_lost: int = 0  # shown frames that held the last good pose
    no_face: int = 0  # shown frames before any face was seen (avatar's own pose)
    latencies_ms: list = field(default_factory=list)  # captured → shown, per shown frame
    track_ms: list = field(default_factory=list)  # time in the tracking stage, per frame
    render_ms: list = field(default_factory=list)  # time in the rendering stage, per frame
    finish_ms: list = field(default_factory=list)  # time in the finishing stage (mouth interior), per frame
    started: float = field(default_factory=time.perf_counter)
    ended: float | None = None

    @property
    def seconds(self) -> float:
        return (self.ended or time.perf_counter()) - self.started

    @property
    def fps(self) -> float:
        return self.shown / self.seconds if self.seconds > 0 else 0.0

    def latency(self, q: float = 50) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    def summary(self) -> dict:
        return {"captured": self.captured, "late": self.late, "offered": self.captured + self.late,
                "shown": self.shown, "dropped": self.dropped,
                "face_lost": self.face_lost, "no_face": self.no_face, "seconds": round(self.seconds, 2),
                "fps": round(self.fps, 2), "latency_ms_median": round(self.latency(50), 1),
                "latency_ms_p90": round(self.latency(90), 1),
                "track_ms_median": round(float(np.median(self.track_ms)), 1) if self.track_ms else float("nan"),
                "render_ms_median": round(float(np.median(self.render_ms)), 1) if self.render_ms else float("nan"),
                "finish_ms_median": round(float(np.median(self.finish_ms)), 1) if self.finish_ms else float("nan")}


class LivePipeline:
    """Capture, tracking, rendering and finishing in four threads; the caller shows the frames.

    A renderer with ``render(landmarks)`` and ``finish(image, landmarks)`` methods (both live
    renderers) has the mouth interior put on in the finishing thread, while the next frame
    renders: on two cores that keeps the interior's few milliseconds out of the frame rate.
    Any other callable ``landmarks → image`` is the whole rendering stage.

    ``for frame in pipeline.frames(): ...`` yields :class:`Frame` objects with ``rendered`` set,
    in capture order (older frames overtaken by newer ones are dropped); break or call
    :meth:`stop` to end it. ``render_delay`` (s) slows the
    renderer artificially, to see frame dropping on a fast machine.
    """

    def __init__(self, source: Iterator[np.ndarray], driver: Callable, renderer: Callable,
                 max_frames: int | None = None, render_delay: float = 0.0):
        self.source, self.driver, self.renderer = source, driver, renderer
        # a renderer that finishes frames separately (render + finish) or one callable
        self._finishes = hasattr(renderer, "render") and hasattr(renderer, "finish")
        self.max_frames = max_frames
        self.render_delay = render_delay
        self.stats = LiveStats()
        self.last_time = 0.0  # Frame.time of the last captured frame: where a recording ends
        self._captured, self._tracked, self._rendered = LatestSlot(), LatestSlot(), LatestSlot()
        self._finished = LatestSlot()
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self._fps_window: collections.deque = collections.deque(maxlen=30)
        self._threads = [threading.Thread(target=self._guard(fn), name=f"live-{name}", daemon=True)
                         for name, fn in (("capture", self._capture), ("track", self._track),
                                          ("render", self._render), ("finish", self._finish))]

    def _guard(self, fn):
        def run():
            try:
                fn()
            except BaseException as exc:  # shown to the caller, which re-raises it
                self._errors.append(exc)
                self._stop.set()
                for slot in (self._captured, self._tracked, self._rendered, self._finished):
                    slot.close()
        return run

    def _capture(self) -> None:
        first = None
        try:
            for index, image in enumerate(self.source):
                if self._stop.is_set() or (self.max_frames is not None and index >= self.max_frames):
                    break
                now = time.perf_counter()
                first = now if first is None else first
                # A file knows each frame's place in it; a camera's frames are placed by the clock.
                self.last_time = getattr(self.source, "position", now - first)
                self.stats.captured += 1
                self._captured.put(Frame(index, now, image, self.last_time))
        finally:
            self._captured.close()

    def _stage(self, inbox: LatestSlot, outbox: LatestSlot, work: Callable, times_ms: list) -> None:
        """Take the newest frame from ``inbox``, run ``work(frame)`` on it (timed into
        ``times_ms``), pass it to ``outbox``; until stopped or ``inbox`` is closed and empty."""
        try:
            while not self._stop.is_set():
                frame = inbox.take()
                if frame is None:
                    if inbox.closed_and_empty:
                        break
                    continue
                start = time.perf_counter()
                work(frame)
                times_ms.append((time.perf_counter() - start) * 1000)
                outbox.put(frame)
        finally:
            outbox.close()

    def _track(self) -> None:
        def track(frame: Frame) -> None:
            frame.landmarks, frame.face = self.driver(frame.image, frame.captured)
        self._stage(self._captured, self._tracked, track, self.stats.track_ms)

    def _render(self) -> None:
        def render(frame: Frame) -> None:
            frame.rendered = self.renderer.render(frame.landmarks) if self._finishes else self.renderer(frame.landmarks)
            if self.render_delay:
                time.sleep(self.render_delay)
        self._stage(self._tracked, self._rendered, render, self.stats.render_ms)

    def _finish(self) -> None:
        def finish(frame: Frame) -> None:
            if self._finishes:
                frame.rendered = self.renderer.finish(frame.rendered, frame.landmarks)
        self._stage(self._rendered, self._finished, finish, self.stats.finish_ms)

    def frames(self) -> Iterator[Frame]:
        """Rendered frames as they come; the pipeline's threads run while this is iterated."""
        self.stats.started = time.perf_counter()
        for thread in self._threads:
            thread.start()
        try:
            while True:
                frame = self._finished.take()
                if frame is None:
                    if self._finished.closed_and_empty or self._stop.is_set():
                        break
                    continue
                now = time.perf_counter()
                self.stats.shown += 1
                self.stats.latencies_ms.append((now - frame.captured) * 1000)
                self.stats.face_lost += frame.face == "lost"
                self.stats.no_face += frame.face == "none"
                self._fps_window.append(now)
                yield frame
        finally:
            self.stop()
        if self._errors:
            raise self._errors[0]

    def current_fps(self) -> float:
        """Frames shown per second over the last 30 shown frames."""
        if len(self._fps_window) < 2:
            return 0.0
        return (len(self._fps_window) - 1) / max(self._fps_window[-1] - self._fps_window[0], 1e-6)

    def stop(self) -> None:
        self._stop.set()
        for slot in (self._captured, self._tracked, self._rendered, self._finished):
            slot.close()
        for thread in self._threads:
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(timeout=5)
        self.stats.ended = self.stats.ended or time.perf_counter()
        # Frames overtaken by a newer one in a mailbox (never shown), plus those the source
        # delivered while the reader was too late for them.
        self.stats.late = getattr(self.source, "skipped", 0)
        self.stats.dropped = sum(s.dropped for s in (self._captured, self._tracked, self._rendered, self._finished)) + self.stats.late


# -- recording --------------------------------------------------------------------------------

class LiveRecorder:
    """Writes shown pictures to an mp4 in the source's time, from its own thread.

    Each picture goes to the frame slot of its :attr:`Frame.time` at ``fps``; the slots of frames
    dropped live (and those before the first shown picture) repeat the picture before, so the file
    lasts as long as the source played, and ``audio_from`` (the driving video) stays in sync.
    Pictures arriving while the encoder is busy are skipped (counted in ``skipped``, their slots
    repeated) rather than slowing the live loop. ``repeated``: slots filled by a repeat.
    """

    def __init__(self, path, fps: float, audio_from=None):
        from talkinghead.data.video import write_video

        self.path, self.fps = path, fps
        self.skipped = self.written = self.repeated = 0
        self.error: BaseException | None = None
        self._shape: tuple | None = None  # the first picture's; the encoder needs one size throughout
        self._queue: queue.Queue = queue.Queue(maxsize=8)

        def run():
            try:
                self.written = write_video(path, self._slots(), fps, audio_from=audio_from)
            except BaseException as exc:  # reported by close()
                self.error = exc

        self._thread = threading.Thread(target=run, name="live-recorder", daemon=True)
        self._thread.start()

    def _slot(self, seconds: float) -> int:
        return max(0, round(seconds * self.fps))

    def _slots(self) -> Iterator[np.ndarray]:
        """One picture per frame slot, in order: each queued (slot, picture) after repeats of
        the previous picture up to its slot; ("end", slot) pads the last one up to that slot."""
        previous, upcoming = None, 0
        while True:
            item = self._queue.get()
            if item is None:
                return
            slot, picture = item
            if slot == "end":
                while previous is not None and upcoming <= picture:
                    self.repeated += 1
                    upcoming += 1
                    yield previous
                continue
            if slot < upcoming:  # a second picture in one slot (a camera's clock jitters): keep the first
                continue
            while upcoming < slot:
                self.repeated += 1
                upcoming += 1
                yield previous if previous is not None else picture
            upcoming, previous = slot + 1, picture
            yield picture

    def add(self, rgb: np.ndarray, seconds: float) -> None:
        """Record ``rgb`` (H, W, 3) at ``seconds`` into the source (:attr:`Frame.time`)."""
        if self._shape is None:
            self._shape = rgb.shape
        if rgb.shape != self._shape:
            rgb = cv2.resize(rgb, (self._shape[1], self._shape[0]))
        try:
            self._queue.put_nowait((self._slot(seconds), rgb))
        except queue.Full:
            self.skipped += 1

    def close(self, until: float | None = None) -> None:
        """Finish the file, the last picture repeated up to the frame at ``until`` seconds (the
        last captured frame's :attr:`Frame.time`)."""
        if until is not None:
            self._queue.put(("end", self._slot(until)))
        self._queue.put(None)
        self._thread.join()
        if self.error is not None:
            raise self.error

    @property
    def seconds(self) -> float:
        return self.written / self.fps


# -- the shown picture ------------------------------------------------------------------------

FACE_MESSAGES = {"lost": "face lost: holding last pose", "none": "no face in view: avatar's own pose"}


def compose_view(frame: Frame, fps: float, display_size: int | None, side_by_side: bool = False,
                 overlay: bool = True) -> np.ndarray:
    """The picture shown for ``frame``: the rendering at ``display_size`` px (None: as rendered;
    the driver beside it with ``side_by_side``), with fps, latency and face state written on it.
    (H, W, 3) RGB."""
    display_size = display_size or frame.rendered.shape[0]
    view = frame.rendered
    if display_size != view.shape[0]:
        view = cv2.resize(view, (display_size, display_size), interpolation=cv2.INTER_LINEAR)
    if side_by_side:
        h, w = frame.image.shape[:2]
        driver = cv2.resize(frame.image, (max(2, round(w * display_size / h)), display_size),
                            interpolation=cv2.INTER_AREA)
        view = np.concatenate([driver, view], axis=1)
    if overlay:
        latency = (time.perf_counter() - frame.captured) * 1000
        lines = [f"{fps:4.1f} fps  {latency:3.0f} ms"]
        if frame.face in FACE_MESSAGES:
            lines.append(FACE_MESSAGES[frame.face])
        view = np.ascontiguousarray(view)
        for i, text in enumerate(lines):
            y = 18 + 18 * i
            cv2.putText(view, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(view, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                        (255, 80, 80) if i else (255, 255, 255), 1, cv2.LINE_AA)
    return view
