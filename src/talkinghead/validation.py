"""Checks of command-line arguments, run before any heavy work.

Two kinds:

* argparse ``type=`` converters (:func:`int_in`, :func:`float_in`) reject out-of-range,
  non-finite or non-numeric values while the command line is parsed, so ``--fps -5`` or
  ``--batch-size 0`` fail at once with one line (exit 2), never 90 s into fine-tuning.
* checks of paths and devices (:func:`check_device`, :func:`check_output_file`,
  :func:`check_input_path`) that commands call first thing in ``run``.

Config fields (``--set section.field=value``) are checked by :meth:`talkinghead.config.Config.validate`.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Callable

from talkinghead.errors import TalkingHeadError


def _describe(lo, hi, lo_open: bool = False) -> str:
    if hi is None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}]"


def int_in(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """argparse type: an integer ``lo <= n (<= hi)``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"{value} must be {_describe(lo, hi)}")
        return value

    parse.__name__ = "integer"
    return parse


def float_in(lo: float, hi: float | None = None, lo_open: bool = False) -> Callable[[str], float]:
    """argparse type: a finite number ``lo <= x (<= hi)`` (``lo < x`` with ``lo_open``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text} is not a finite number")
        if value < lo or (lo_open and value == lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"{value:g} must be {_describe(lo, hi, lo_open)}")
        return value

    parse.__name__ = "number"
    return parse


#: Output frame rates accepted by ``--fps``: H.264 in mp4 handles these comfortably, and the
#: encoder's time base (1/fps as a fraction of denominator <= 1001) stays exact. Below 1 frame/s
#: a rate such as 0.0001 rounds to a zero time base.
FPS_RANGE = (1.0, 240.0)
fps_type = float_in(FPS_RANGE[0], FPS_RANGE[1])


def check_device(name: str | None) -> str | None:
    """``--device``: a torch device that exists on this machine (None = automatic)."""
    if name is None:
        return None
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise TalkingHeadError(f"--device {name!r}: not a device (use cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise TalkingHeadError(f"--device {name}: no CUDA GPU is available on this machine (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise TalkingHeadError(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s)")
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise TalkingHeadError(f"--device {name}: MPS is not available on this machine")
    elif device.type != "cpu":
        raise TalkingHeadError(f"--device {name!r}: unsupported device (use cpu or cuda)")
    return name


def check_input_path(path: str | os.PathLike, what: str = "file") -> Path:
    """An input that must exist (a file or, for frame folders, a folder)."""
    path = Path(path)
    if not path.exists():
        raise TalkingHeadError(f"{path}: {what} not found")
    if not os.access(path, os.R_OK):
        raise TalkingHeadError(f"{path}: {what} is not readable (permission denied)")
    return path


def check_output_file(path: str | os.PathLike, suffixes: tuple[str, ...] = ()) -> Path:
    """An output file name that can be written: not a folder, the right extension, and a
    folder that exists (or can be created) and is writable. Nothing is created here."""
    path = Path(path)
    if suffixes and path.suffix.lower() not in suffixes:
        raise TalkingHeadError(f"{path}: output must be a {' or '.join(suffixes)} file")
    if path.is_dir():
        raise TalkingHeadError(f"{path}: is a folder; name the output file (e.g. {path / ('out' + (suffixes[0] if suffixes else ''))})")
    parent = path.parent if str(path.parent) else Path(".")
    existing = _nearest_existing(parent)
    if not existing.is_dir():
        raise TalkingHeadError(f"{path}: cannot write there ({existing} is not a folder)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise TalkingHeadError(f"{path}: cannot write there (permission denied in {existing})")
    if path.exists() and not os.access(path, os.W_OK) and not os.access(parent, os.W_OK):
        raise TalkingHeadError(f"{path}: cannot overwrite it (permission denied)")
    return path


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (where a new file or folder would be made)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_folder(path: str | os.PathLike) -> Path:
    """An output folder: not an existing file, and writable where it exists (not created here)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise TalkingHeadError(f"{path}: exists and is not a folder")
    existing = _nearest_existing(path)
    if not existing.is_dir():
        raise TalkingHeadError(f"{path}: cannot create it ({existing} is not a folder)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise TalkingHeadError(f"{path}: cannot write there (permission denied in {existing})")
    return path
