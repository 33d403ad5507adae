"""One way to stop, for every command and every training rank.

* CLI commands: :func:`install_cli_handlers` turns SIGTERM (``kill``, ``timeout``, schedulers,
  torchrun) into a :class:`Terminated` exception, raised like Ctrl-C's ``KeyboardInterrupt``, so
  every ``with atomic_path(...)`` block removes its temporary file on the way out. The CLI exits
  with :data:`EXIT_TERMINATED` (143 = 128 + SIGTERM, the shell's convention) or 130 for Ctrl-C.
* Loops that must stop at a clean point (a training step, so that every DDP rank checkpoints
  the same weights): ``with stop_requests() as stop:`` makes SIGINT and SIGTERM only *record*
  the request; the loop polls ``stop.requested`` (agreed across ranks by the caller) and ends
  itself. A second Ctrl-C while a stop is pending raises ``KeyboardInterrupt`` at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from dataclasses import dataclass
from typing import Iterator

#: Exit status after SIGTERM (128 + 15).
EXIT_TERMINATED = 143
#: Exit status after Ctrl-C (128 + 2).
EXIT_INTERRUPTED = 130


class Terminated(BaseException):
    """Raised in the main thread when the process receives SIGTERM.

    A ``BaseException`` (like ``KeyboardInterrupt``) so that ``except Exception`` blocks do not
    swallow it, while ``finally`` and context managers still clean up.
    """


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def install_cli_handlers() -> None:
    """SIGTERM → :class:`Terminated` in the main thread (a no-op outside it)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)


@dataclass
class StopRequest:
    """What :func:`stop_requests` recorded: the first signal received, if any."""

    signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def reason(self) -> str:
        if self.signum is None:
            return ""
        return "terminated" if self.signum == signal.SIGTERM else "interrupted"

    @property
    def exit_code(self) -> int:
        return EXIT_TERMINATED if self.signum == signal.SIGTERM else EXIT_INTERRUPTED


@contextlib.contextmanager
def stop_requests() -> Iterator[StopRequest]:
    """Record SIGINT/SIGTERM instead of raising, for the duration of the block.

    Outside the main thread (where Python cannot install handlers) it yields a request that is
    never set, and signals keep their usual behaviour.
    """
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def record(signum, frame):
        if stop.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: the user does not want to wait
        if stop.signum is None:
            stop.signum = signum

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, record)
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
