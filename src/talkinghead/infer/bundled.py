"""The bundled meta-learned model and demo assets that ship inside the package."""

from __future__ import annotations

import os
from pathlib import Path

from talkinghead.errors import TalkingHeadError

ASSETS = Path(__file__).resolve().parent.parent / "assets"
BUNDLED_CHECKPOINT = ASSETS / "meta_small.safetensors"
#: The mouth generator (``talkinghead train-mouth``) used for mouth interiors by default.
BUNDLED_MOUTH = ASSETS / "mouth.safetensors"


def _given_or_bundled(path: str | os.PathLike | None, bundled: Path, not_found: str, no_bundled: str) -> Path:
    """``path`` if it names a file (else the one-line error "PATH: ``not_found``"), or the
    ``bundled`` file when ``path`` is None (else the error ``no_bundled``)."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise TalkingHeadError(f"{path}: {not_found}")
        return path
    if not bundled.is_file():
        raise TalkingHeadError(no_bundled)
    return bundled


def resolve_checkpoint(path: str | os.PathLike | None) -> Path:
    """The given checkpoint, or the bundled one when ``path`` is None."""
    return _given_or_bundled(path, BUNDLED_CHECKPOINT, "checkpoint not found",
                             f"no bundled model in this installation ({BUNDLED_CHECKPOINT} is missing); "
                             "pass --checkpoint with a model trained by `talkinghead train`")


def resolve_mouth_weights(path: str | os.PathLike | None) -> Path:
    """The given mouth generator file, or the bundled one when ``path`` is None."""
    return _given_or_bundled(path, BUNDLED_MOUTH, "mouth model not found (mouth.weights)",
                             f"no bundled mouth model in this installation ({BUNDLED_MOUTH} is missing); "
                             "pass --set mouth.weights=FILE or mouth.interior=drawn")
