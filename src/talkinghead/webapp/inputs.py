"""What the web app accepts from a request: JSON objects (strict), numbers and switches in
them, expression controls; anything else is a :class:`ClientError` with its HTTP status."""

from __future__ import annotations

import json
import math

from talkinghead.infer.expression import Expression


class ClientError(Exception):
    """An HTTP error status with a one-line message for the page."""

    def __init__(self, status: int, message: str, **extra):
        super().__init__(message)
        self.status, self.extra = status, extra


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


def parse_json(body: bytes) -> dict:
    """A request body → a JSON object; invalid UTF-8, NaN/Infinity, overflowing numbers and
    nesting too deep are a 400, like any other malformed JSON."""
    try:
        data = json.loads(body.decode("utf-8") or "{}", parse_constant=_reject_constant, parse_float=_finite_float)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ClientError(400, "request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ClientError(400, "request body must be a JSON object")
    return data


def int_field(data: dict, name: str, lo: int, hi: int, default: int | None = None) -> int | None:
    value = data.get(name, default)
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or not lo <= value <= hi:
        raise ClientError(400, f"{name}={value!r}: use a whole number from {lo} to {hi}")
    return int(value)


def bool_field(data: dict, name: str) -> bool:
    value = data.get(name, False)
    if not isinstance(value, bool):
        raise ClientError(400, f"{name} must be true or false")
    return value


def expression_from(data: dict) -> Expression:
    known = {"eyes", "lips", "mouth", "smile", "yaw", "pitch", "roll"}
    unknown = set(data) - known
    if unknown:
        raise ClientError(400, f"unknown expression control(s): {', '.join(sorted(unknown))}")
    return Expression(**data)  # range-checked: TalkingHeadError → 400
