"""The bundled meta-learned model and demo assets that ship inside the package."""

from __future__ import annotations

import os
from pathlib import Path

from talkinghead.errors import TalkingHeadError

ASSETS = Path(__file__).resolve().parent.parent / "assets"
BUNDLED_CHECKPOINT = ASSETS / "meta_small.safetensors"
#: The mouth generator (``talkinghead train-mouth``) used for mouth interiors by default.
BUNDLED_MOUTH = ASSETS / "mouth.safetensors"


def resolve_checkpoint(path: str | os.PathLike | None) -> Path:
    """The given checkpoint, or the bundled one when ``path`` is None."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise TalkingHeadError(f"{path}: checkpoint not found")
        return path
    if not BUNDLED_CHECKPOINT.is_file():
        raise TalkingHeadError(
            f"no bundled model in this installation ({BUNDLED_CHECKPOINT} is missing); "
            "pass --checkpoint with a model trained by `talkinghead train`"
        )
    return BUNDLED_CHECKPOINT


def resolve_mouth_weights(path: str | os.PathLike | None) -> Path:
    """The given mouth generator file, or the bundled one when ``path`` is None."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise TalkingHeadError(f"{path}: mouth model not found (mouth.weights)")
        return path
    if not BUNDLED_MOUTH.is_file():
        raise TalkingHeadError(f"no bundled mouth model in this installation ({BUNDLED_MOUTH} is missing); "
                               "pass --set mouth.weights=FILE or mouth.interior=drawn")
    return BUNDLED_MOUTH
