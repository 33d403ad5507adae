"""Progress of library calls made on behalf of a web job.

The library reports long work through tqdm bars. In the app, each job's thread registers a
callback; :class:`RoutedTqdm` (installed in place of tqdm in the modules that draw bars) sends
that thread's bars to its callback instead of the console, and behaves as plain tqdm in every
other thread. The callback may raise to cancel the job at the next step.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import threading
from typing import Callable, Iterator

import tqdm as tqdm_module

_original = tqdm_module.tqdm
_local = threading.local()

#: Modules whose bars are routed (they import ``tqdm`` at module level).
ROUTED_MODULES = ("talkinghead.train.finetune", "talkinghead.infer.avatar", "talkinghead.infer.faces")

ProgressCallback = Callable[[str, int, "int | None"], None]  # (stage, done, total)


class RoutedTqdm(_original):
    def __init__(self, *args, **kwargs):
        self._callback = getattr(_local, "callback", None)
        if self._callback is not None:
            kwargs.update(disable=False, file=io.StringIO(), mininterval=0, miniters=1, dynamic_ncols=False)
        super().__init__(*args, **kwargs)
        if self._callback is not None:
            self._callback(self.desc or "working", 0, self.total)

    def update(self, n=1):
        result = super().update(n)
        if self._callback is not None:
            self._callback(self.desc or "working", int(self.n), self.total)
        return result


def install() -> None:
    """Route the library's bars (idempotent). ``tqdm.tqdm`` itself is replaced too, for code
    that imports it at call time (landmark tracking)."""
    tqdm_module.tqdm = RoutedTqdm
    for name in ROUTED_MODULES:
        module = importlib.import_module(name)
        module.tqdm = RoutedTqdm


@contextlib.contextmanager
def report_to(callback: ProgressCallback) -> Iterator[None]:
    """Send this thread's progress bars to ``callback`` for the duration of the block."""
    previous = getattr(_local, "callback", None)
    _local.callback = callback
    try:
        yield
    finally:
        _local.callback = previous
