"""What stands between the network and the app: checks made before a request reaches a route.

* :class:`RequestGuard` (ASGI middleware): the ``Host`` header must name this server (a
  DNS-rebinding page reaches it under its own name), an ``Origin`` header must be this server's
  (a cross-site page's requests carry theirs), the access token (when one is set) must be in
  the auth cookie; a request body needs a ``Content-Length`` (411) within the route's limit
  (413), both checked before a byte of the body is read, and must keep arriving (408).
* :class:`GuardedH11Protocol`: uvicorn's HTTP/1.1 protocol with a deadline for a request's
  headers, so a client that sends them slowly (slow-loris) is disconnected; uvicorn's own
  ``timeout_keep_alive`` covers idle connections between requests.
* :func:`image_header`: an image's format and size from its header (Pillow reads nothing
  more before ``load``), to refuse huge pictures before decoding them.
"""

from __future__ import annotations

import asyncio
import hmac
import io
import ipaddress
import json
import logging
import socket
import warnings
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Callable

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

AUTH_COOKIE = "talkinghead_auth"
#: Seconds a client may take to send a request's headers.
HEADER_TIMEOUT_S = 10.0
#: Seconds a request body may pause between two chunks.
BODY_IDLE_TIMEOUT_S = 20.0
#: Routes open without the access token: the page (it asks for the token) and the login.
OPEN_ROUTES = {("GET", "/"), ("POST", "/api/login"), ("GET", "/favicon.ico")}


def loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) is this computer only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_host_names(bind_host: str, extra: tuple[str, ...] = ()) -> set[str]:
    """Host names a browser may use to reach a server listening on ``bind_host``: loopback
    names always; the bind address itself; on a wildcard address (0.0.0.0, ::) any IP address
    literal and this computer's own names, since the LAN address is not known in advance;
    plus ``extra`` (``--allow-host``)."""
    names = {"127.0.0.1", "localhost", "[::1]", "::1"} | {h.lower() for h in extra}
    if bind_host not in ("0.0.0.0", "::", ""):
        names.add(bind_host.lower())
    else:
        hostname = socket.gethostname().lower()
        names |= {hostname, f"{hostname}.local", "*ip*"}
    return names


def split_host(value: str) -> str:
    """``Host`` header → the host name without the port (IPv6 literals keep their brackets)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[: value.find("]") + 1] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def host_allowed(host: str, names: set[str]) -> bool:
    name = split_host(host)
    if name in names:
        return True
    if "*ip*" in names:
        try:
            ipaddress.ip_address(name.strip("[]"))
            return True
        except ValueError:
            return False
    return False


@dataclass
class GuardConfig:
    host_names: set[str]
    token: str | None = None  # None: no token needed (loopback)
    body_limits: dict[str, int] = field(default_factory=dict)  # path → most bytes; others: default_body_limit
    default_body_limit: int = 16 * 1024  # a JSON request
    #: A refused body larger than this is not drained: the connection is closed after the reply.
    drain_limit: int = 256 * 2**20


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def cookie_value(scope, name: str) -> str | None:
    raw = _header(scope, b"cookie")
    if not raw:
        return None
    try:
        jar = SimpleCookie(raw)
    except CookieError:
        return None
    return jar[name].value if name in jar else None


def token_ok(scope, token: str | None) -> bool:
    if token is None:
        return True
    given = cookie_value(scope, AUTH_COOKIE) or ""
    return hmac.compare_digest(given.encode(), token.encode())


class GuardError(Exception):
    def __init__(self, status: int, message: str, close: bool = False, extra: dict | None = None):
        super().__init__(message)
        self.status, self.close, self.extra = status, close, extra or {}


class BodyTimeout(Exception):
    """The client stopped sending a request body."""


class RequestGuard:
    """ASGI middleware: the checks of the module docstring, before the app sees a request."""

    def __init__(self, app, config: GuardConfig):
        self.app, self.config = app, config

    def check(self, scope) -> None:
        config = self.config
        host = _header(scope, b"host") or ""
        if not host_allowed(host, config.host_names):
            raise GuardError(421 if scope["type"] == "http" else 403,
                             f"this server does not answer to the name {split_host(host)!r}", close=True)
        origin = _header(scope, b"origin")
        if origin is not None and origin.lower() not in (f"http://{host.lower()}", f"https://{host.lower()}"):
            raise GuardError(403, "cross-origin request refused")
        method = scope.get("method", "GET")
        if (method, scope["path"]) not in OPEN_ROUTES and not token_ok(scope, config.token):
            raise GuardError(401, "this server needs its access token (printed where it was started)",
                             extra={"login": True})
        if scope["type"] != "http":
            return
        if _header(scope, b"transfer-encoding") is not None:
            raise GuardError(411, "send the request with a Content-Length", close=True)
        length_text = _header(scope, b"content-length")
        if length_text is None:
            if method in ("POST", "PUT", "PATCH"):
                raise GuardError(411, "the request has no Content-Length")
            return
        length = int(length_text)  # h11 accepts only digits here
        limit = config.body_limits.get(scope["path"], config.default_body_limit)
        if length > limit:
            raise GuardError(413, f"request too large: {length / 2**20:.1f} MB (limit {limit / 2**20:.3g} MB)",
                             close=length > config.drain_limit)

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        try:
            self.check(scope)
        except GuardError as exc:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 4000 + exc.status, "reason": str(exc)[:120]})
                return
            body = Body(receive, self.config.drain_limit)
            return await send_json(body.finishing(send, scope), exc.status, {"error": str(exc), **exc.extra},
                                   close=exc.close)
        if scope["type"] == "websocket":
            return await self.app(scope, receive, send)
        body = Body(receive, self.config.drain_limit)
        try:
            await self.app(scope, body.receive, body.finishing(send, scope))
        except BodyTimeout:
            await send_json(send, 408, {"error": "the request body stopped arriving"}, close=True)


class Body:
    """A request body as the app reads it: a chunk that takes over BODY_IDLE_TIMEOUT_S to come
    raises :class:`BodyTimeout`. ``finishing(send)`` holds back the end of a response until the
    unread rest of the body (up to ``drain_limit`` bytes) has been read and discarded: the reply
    goes out at once, and a client still sending its body gets it instead of a reset connection
    (uvicorn closes a ``Connection: close`` connection as soon as the response ends)."""

    def __init__(self, receive: Callable, drain_limit: int):
        self._receive, self.drain_limit = receive, drain_limit
        self.done = False

    async def receive(self):
        if self.done:
            return await self._receive()
        try:
            message = await asyncio.wait_for(self._receive(), BODY_IDLE_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise BodyTimeout() from None
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.done = True
        return message

    async def drain(self) -> None:
        try:
            while not self.done:
                await self.receive()
        except BodyTimeout:
            pass

    def finishing(self, send: Callable, scope) -> Callable:
        length = int(_header(scope, b"content-length") or 0)

        async def finishing_send(message):
            if message["type"] == "http.response.body" and not message.get("more_body", False) and not self.done \
                    and length <= self.drain_limit:
                await send({**message, "more_body": True})
                await self.drain()
                return await send({"type": "http.response.body", "body": b""})
            return await send(message)

        return finishing_send


async def send_json(send, status: int, data: dict, close: bool = False) -> None:
    body = json.dumps(data).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"cache-control", b"no-store")]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's headers: a connection that
    has not sent a complete request head within HEADER_TIMEOUT_S of connecting (or of the
    previous response) is closed."""

    header_timeout = HEADER_TIMEOUT_S

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._header_deadline = None
        self._arm_header_deadline()

    def _arm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
        self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            log.debug("closing a connection that sent no complete request head in %.0f s", self.header_timeout)
            self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_deadline()

    def connection_lost(self, exc) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None
        super().connection_lost(exc)


@dataclass
class ImageHeader:
    format: str  # Pillow's name: JPEG, PNG, WEBP, BMP ("" when beyond Pillow's own bomb guard)
    width: int
    height: int
    beyond_pillow_guard: bool = False

    @property
    def pixels(self) -> float:
        return float("inf") if self.beyond_pillow_guard else self.width * self.height


def image_header(source: bytes | Path) -> ImageHeader | None:
    """Format and size from an image's header only (no pixel is decoded); None when it is not
    an image Pillow knows."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # Pillow's bomb warning: the caller applies its own, lower cap
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source) as im:
                return ImageHeader(im.format or "", int(im.width), int(im.height))
    except Image.DecompressionBombError:
        return ImageHeader("", 0, 0, beyond_pillow_guard=True)
    except (UnidentifiedImageError, OSError, ValueError):
        return None
