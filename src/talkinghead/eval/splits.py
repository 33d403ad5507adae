"""Identity splits: which identities meta-learning may see ('train') and which are held out
for evaluation ('dev'). ``faces`` is the bundled split of the shared faces data (docs/splits.md)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from talkinghead.errors import TalkingHeadError

BUNDLED = {"faces": Path(__file__).resolve().parent.parent / "assets" / "split_faces.json"}


def load_split(name_or_path: str | os.PathLike = "faces") -> dict[str, list[str]]:
    """A split by bundled name, or from a file: JSON with "train"/"dev" lists, or a text file
    with one held-out identity per line (then "train" is empty: everything else)."""
    path = BUNDLED.get(str(name_or_path), Path(name_or_path))
    if not path.is_file():
        raise TalkingHeadError(f"{name_or_path}: split file not found (or use the bundled 'faces')")
    text = path.read_text()
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TalkingHeadError(f"{path}: not valid JSON ({exc})") from None
        split = {"train": list(data.get("train", [])), "dev": list(data.get("dev", []))}
    else:
        ids = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
        split = {"train": [], "dev": ids}
    overlap = set(split["train"]) & set(split["dev"])
    if overlap:
        raise TalkingHeadError(f"{path}: identities in both train and dev: {sorted(overlap)[:5]}")
    return split
