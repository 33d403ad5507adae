"""The live tab's WebSocket: frames in, renderings out, dropping frames instead of queueing them
(protocol in :mod:`talkinghead.webapp.server`)."""

from __future__ import annotations

import asyncio
import logging
import struct

import anyio
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from talkinghead.errors import TalkingHeadError
from talkinghead.infer.expression import Expression
from talkinghead.webapp import work
from talkinghead.webapp.inputs import ClientError, expression_from, parse_json
from talkinghead.webapp.sessions import Session

log = logging.getLogger(__name__)


class LatestBox:
    """One-item async mailbox: ``put`` replaces an item nobody took (counted in ``dropped``)."""

    def __init__(self):
        self.item = None
        self.dropped = 0
        self._ready = asyncio.Event()

    def put(self, item) -> None:
        if self.item is not None:
            self.dropped += 1
        self.item = item
        self._ready.set()

    async def take(self):
        await self._ready.wait()
        self._ready.clear()
        item, self.item = self.item, None
        return item


class LiveConnection:
    """One live WebSocket: receive frames, track them, render them; two stages with a
    one-frame mailbox before each, so a busy stage drops frames instead of queueing them."""

    def __init__(self, state, session: Session, websocket: WebSocket):
        """``state``: the server's :class:`~talkinghead.webapp.server.AppState`."""
        self.state, self.session, self.websocket = state, session, websocket
        self.frames, self.tracked = LatestBox(), LatestBox()
        self.expression: Expression | None = None
        self.tasks = None  # the connection's task group, once running
        self.max_pixels = state.limits.max_live_megapixels * 1e6

    @property
    def dropped(self) -> int:
        return self.frames.dropped + self.tracked.dropped

    async def run(self) -> None:
        """Serve this socket until either side closes it, or a newer socket of the same session
        (the page reopened, another tab) takes the live view over."""
        session = self.session
        with session.lock:
            previous, session.live_connection = session.live_connection, self
        if previous is not None:
            await previous.taken_over()
        try:
            async with anyio.create_task_group() as tasks:
                self.tasks = tasks

                async def stage(work_loop):
                    await self._guarded(work_loop)
                    tasks.cancel_scope.cancel()  # one stage ended: the connection is over

                await self._guarded(self._start)
                if self.connected:
                    tasks.start_soon(stage, self._track)
                    tasks.start_soon(stage, self._render)
                    await stage(self._receive)
        finally:
            with session.lock:
                if session.live_connection is self:
                    session.live_connection = None

    async def taken_over(self) -> None:
        if self.tasks is not None:
            self.tasks.cancel_scope.cancel()
        await self._close_with("the live view was opened again (another tab, or the page reloaded)")

    async def _start(self) -> None:
        await anyio.to_thread.run_sync(work.live_state, self.session, limiter=self.state.live_limiter)
        size = self.session.output_size or self.session.avatar.output_size
        await self.websocket.send_json({"ready": True, "size": size})

    async def _guarded(self, work_loop) -> None:
        """Run one part of the connection; a user error or a bug closes it with a message."""
        try:
            await work_loop()
        except anyio.get_cancelled_exc_class():
            raise
        except WebSocketDisconnect:
            return
        except Exception as exc:
            if not self.connected:  # the browser went away while we were sending
                return
            if isinstance(exc, TalkingHeadError):
                await self._close_with(self.session.user_message(str(exc)))
            else:  # a bug: tell the page, log the details, keep serving others
                log.exception("live connection failed")
                await self._close_with(f"internal error ({type(exc).__name__}); see the server's log")

    @property
    def connected(self) -> bool:
        return (self.websocket.application_state == WebSocketState.CONNECTED
                and self.websocket.client_state == WebSocketState.CONNECTED)

    async def _close_with(self, message: str) -> None:
        try:
            await self.websocket.send_json({"error": message})
            await self.websocket.close(4400)
        except (WebSocketDisconnect, RuntimeError):
            pass

    async def _receive(self) -> None:
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                data = message["bytes"]
                if len(data) < 5:
                    continue
                (number,) = struct.unpack(">I", data[:4])
                self.frames.put((number, data[4:]))
            elif message.get("text") is not None:
                try:
                    command = parse_json(message["text"].encode())
                    if command.get("reset"):
                        live = self.session.live
                        if live is not None:
                            live.driver.reset_reference()
                    if isinstance(command.get("expression"), dict):
                        self.expression = expression_from(command["expression"])
                except (ClientError, TalkingHeadError) as exc:
                    await self.websocket.send_json({"error": str(exc), "fatal": False})

    async def _track(self) -> None:
        limiter = self.state.live_limiter
        while True:
            number, data = await self.frames.take()
            live = self.session.live
            if live is None or live.version != self.session.avatar_version:  # a new avatar
                live = await anyio.to_thread.run_sync(work.live_state, self.session, limiter=limiter)
            try:
                landmarks, face = await anyio.to_thread.run_sync(work.live_track, live, data, self.max_pixels,
                                                                 limiter=limiter)
            except TalkingHeadError as exc:  # a bad frame: say so, keep going
                await self.websocket.send_json({"frame": number, "error": str(exc), "fatal": False})
                continue
            self.tracked.put((number, live, landmarks, face))

    async def _render(self) -> None:
        limiter = self.state.live_limiter
        while True:
            number, live, landmarks, face = await self.tracked.take()
            jpeg = await anyio.to_thread.run_sync(work.live_render, live, landmarks, self.session.output_size,
                                                  self.expression, limiter=limiter)
            await self.websocket.send_json({"frame": number, "face": face, "dropped": self.dropped})
            await self.websocket.send_bytes(jpeg)
