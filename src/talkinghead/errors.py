"""User-facing errors.

Anything a user can cause (a bad file, a missing face, a wrong checkpoint) raises
:class:`TalkingHeadError` with a one-line message naming the file and the problem. The CLI
prints it as ``error: <message>`` and exits with :attr:`exit_code`; it never shows a traceback.
"""

from __future__ import annotations


class TalkingHeadError(Exception):
    """A problem with the user's input or environment; the message is shown as is."""

    #: Process exit status used by the CLI (2 = bad input, 3 = nothing usable found).
    exit_code: int = 2


class NoFaceError(TalkingHeadError):
    """No face was found where one was required."""

    exit_code = 3
