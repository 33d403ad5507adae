"""Progress of long work, for whoever drives the library.

Long loops show a tqdm bar on the console (``progress=True``). A caller that wants the steps
itself (the web app shows them in the page) passes ``on_progress``, a
:data:`ProgressCallback` called as ``on_progress(stage, done, total)`` before the first step
and after each one; it may raise to cancel the work at that step. Nothing is replaced at run
time: the callback travels down as an argument.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

from tqdm import tqdm

#: ``(stage, done, total)``; ``total`` is None when the number of steps is not known.
ProgressCallback = Callable[[str, int, "int | None"], None]


class ProgressBar:
    """``for item in ProgressBar(items, "rendering", show=True, on_progress=cb): ...``: a tqdm bar
    (when ``show``) that also reports every finished step to ``on_progress`` (when given)."""

    def __init__(self, iterable: Iterable, desc: str, show: bool = True,
                 on_progress: ProgressCallback | None = None, **tqdm_kwargs):
        self.desc, self.on_progress = desc, on_progress
        self._bar = tqdm(iterable, desc=desc, disable=not show, **tqdm_kwargs)
        self.total = self._bar.total

    def __iter__(self) -> Iterator:
        report = self.on_progress
        if report is not None:
            report(self.desc, 0, self.total)
        for done, item in enumerate(self._bar, 1):
            yield item
            if report is not None:
                report(self.desc, done, self.total)

    def set_postfix(self, **values) -> None:
        self._bar.set_postfix(**values)

    def close(self) -> None:
        self._bar.close()


def report(on_progress: ProgressCallback | None, stage: str, done: int = 0, total: int | None = None) -> None:
    """Tell ``on_progress`` (if any) that ``stage`` is at ``done`` of ``total``."""
    if on_progress is not None:
        on_progress(stage, done, total)
