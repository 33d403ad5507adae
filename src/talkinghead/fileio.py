"""Atomic file writing: outputs are written to a temporary file beside the target and
renamed into place, so an interrupted run never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from talkinghead.errors import TalkingHeadError


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (and parents) and check that files can be written there."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise TalkingHeadError(f"{path}: cannot write there ({exc.strerror or exc})") from None
    return path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it onto ``target`` on success.

    The temporary name keeps ``target``'s extension (or ``suffix``) so that libraries which
    pick a format from the extension (PyAV, OpenCV, PIL) still work.
    """
    target = Path(target)
    if target.is_dir():
        raise TalkingHeadError(f"{target}: is a folder; name the output file")
    parent = target.parent if str(target.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TalkingHeadError(f"{parent}: cannot create output folder ({exc.strerror or exc})") from None
    ext = suffix if suffix is not None else target.suffix
    try:
        fd, tmp_name = tempfile.mkstemp(dir=parent, prefix=f".{target.stem}.", suffix=f".tmp{ext}")
    except OSError as exc:
        raise TalkingHeadError(f"{target}: cannot write output ({exc.strerror or exc})") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():  # mkstemp makes 0600 files; outputs get the usual umask permissions
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def os_error_message(exc: BaseException) -> str | None:
    """One line for an operating-system error (full disk, a folder where a file was expected,
    permission denied, ...), naming the file when known; None if ``exc`` is not one.

    Also recognises OS errors wrapped by libraries that do not raise ``OSError`` themselves
    (safetensors reports a full disk as ``SafetensorError: ... No space left on device``).
    """
    import errno
    import re

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and (exc.errno is not None or exc.strerror):
            reason = exc.strerror or str(exc)
            if exc.errno == errno.ENOSPC:
                reason = "no space left on the device (free some space and run again)"
            elif exc.errno == errno.EDQUOT:
                reason = "disk quota exceeded"
            name = exc.filename if exc.filename is not None else None
            if name is not None:
                name = _unhide_temporary(str(name))
            return f"{name}: {reason}" if name else reason
        text = str(exc)
        code = re.search(r"\(os error (\d+)\)", text)
        if type(exc).__name__ == "SafetensorError" and code:
            number = int(code.group(1))
            if number == errno.ENOSPC:
                return "writing a model file failed: no space left on the device (free some space and run again)"
            return f"writing a model file failed: {os.strerror(number)}"
        exc = exc.__cause__ or exc.__context__
    return None


def _unhide_temporary(name: str) -> str:
    """Name the output, not the hidden temporary file of :func:`atomic_path`, in messages."""
    import re

    path = Path(name)
    match = re.fullmatch(r"\.(.+)\.[^.]+\.tmp(\.[^.]+)?", path.name)
    return str(path.with_name(match.group(1) + (match.group(2) or ""))) if match else name


#: dtype kinds accepted by :func:`load_npy_array`: floats, signed and unsigned integers.
NUMERIC_KINDS = "fiu"


def load_npy_array(path: str | os.PathLike, what: str, trailing_shape: tuple[int, ...]) -> "np.ndarray":
    """A numeric ``.npy`` array of shape (T, *trailing_shape), T >= 1, checked from its header
    before any data is read: an empty file, an ``.npz`` archive under another name, a header
    claiming more data than the file holds (no allocation is made from it), strings, records,
    booleans, complex numbers or objects end in one TalkingHeadError naming the file. Never
    unpickled."""
    import numpy as np

    path = Path(path)
    expected = "(T, " + ", ".join(str(n) for n in trailing_shape) + ")"
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            start = fh.read(6)
            if size == 0:
                raise TalkingHeadError(f"{path}: empty file, not a {what}")
            if start.startswith(b"PK\x03\x04"):
                raise TalkingHeadError(f"{path}: an .npz archive, not an .npy {what} (save one {expected} "
                                       "array with numpy.save)")
            if start != b"\x93NUMPY":
                raise TalkingHeadError(f"{path}: not an .npy file (expected a {expected} {what} "
                                       "saved with numpy.save)")
            fh.seek(0)
            try:
                version = np.lib.format.read_magic(fh)
                read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                               (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                if read_header is None:  # 3.0 only differs for field names, which are refused anyway
                    raise ValueError(f"format version {version[0]}.{version[1]}")
                shape, _, dtype = read_header(fh)
            except (ValueError, SyntaxError, TypeError) as exc:
                raise TalkingHeadError(f"{path}: damaged .npy header ({exc})") from None
            offset = fh.tell()
    except OSError as exc:
        raise TalkingHeadError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    if dtype.names is not None or dtype.kind not in NUMERIC_KINDS or dtype.subdtype is not None:
        raise TalkingHeadError(f"{path}: holds {dtype} values; a {what} holds numbers (float or int)")
    if len(shape) != 1 + len(trailing_shape) or tuple(shape[1:]) != tuple(trailing_shape) or shape[0] < 1:
        raise TalkingHeadError(f"{path}: expected a {expected} {what}, got an array of shape {shape}")
    needed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if needed != size - offset:
        raise TalkingHeadError(f"{path}: damaged .npy file (its header says {shape} {dtype}, {needed} bytes; "
                               f"the file holds {size - offset})")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise TalkingHeadError(f"{path}: not a readable .npy {what} ({exc})") from None
