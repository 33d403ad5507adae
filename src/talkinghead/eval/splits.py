"""Identity splits: which identities meta-learning may see ('train') and which are held out
for evaluation ('dev'). ``faces`` is the bundled split of the shared faces data (docs/splits.md).

Accepted forms of ``load_split``'s argument:

* a bundled name: ``faces``;
* a JSON file ``{"train": [...], "dev": [...]}`` (other keys are ignored; a bare JSON list is
  read as the held-out identities);
* a text file with one held-out identity per line (blank lines and ``#`` comments ignored).
  It names only the held-out side: ``train`` is then empty, meaning "every other identity";
  :func:`train_identities` resolves that against the identities a data set has.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from talkinghead.errors import TalkingHeadError

BUNDLED = {"faces": Path(__file__).resolve().parent.parent / "assets" / "split_faces.json"}


def _names(value, path: Path, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TalkingHeadError(f"{path}: '{key}' must be a list of identity names")
    return [v.strip() for v in value if v.strip()]


def load_split(name_or_path: str | os.PathLike = "faces") -> dict[str, list[str]]:
    """A split by bundled name or from a file → ``{"train": [...], "dev": [...]}``."""
    path = BUNDLED.get(str(name_or_path), Path(name_or_path))
    if not path.is_file():
        raise TalkingHeadError(f"{name_or_path}: split file not found (bundled splits: {', '.join(BUNDLED)})")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TalkingHeadError(f"{path}: cannot read split file ({exc})") from None
    stripped = text.lstrip()
    if path.suffix.lower() == ".json" or stripped.startswith(("{", "[")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TalkingHeadError(f"{path}: not valid JSON ({exc})") from None
        if isinstance(data, list):
            split = {"train": [], "dev": _names(data, path, "dev")}
        elif isinstance(data, dict) and ("train" in data or "dev" in data):
            split = {"train": _names(data.get("train", []), path, "train"),
                     "dev": _names(data.get("dev", []), path, "dev")}
        else:
            raise TalkingHeadError(f"{path}: expected a JSON object with 'train' and/or 'dev' lists")
    else:
        ids = [line.split("#", 1)[0].strip() for line in text.splitlines()]
        split = {"train": [], "dev": [i for i in ids if i]}
    overlap = set(split["train"]) & set(split["dev"])
    if overlap:
        raise TalkingHeadError(f"{path}: identities in both train and dev: {', '.join(sorted(overlap)[:5])}")
    if not split["train"] and not split["dev"]:
        raise TalkingHeadError(f"{path}: the split names no identities")
    return split


def train_identities(split: dict[str, list[str]], available: Iterable[str]) -> list[str]:
    """The identities to train on among ``available``: the split's 'train' list when it has
    one, else every available identity not held out in 'dev' (a held-out text file)."""
    available = sorted(set(available))
    held_out = set(split.get("dev", []))
    if split.get("train"):
        keep = set(split["train"])
        return [i for i in available if i in keep and i not in held_out]
    return [i for i in available if i not in held_out]
