"""The package's layers run one way (data → models → train / infer → eval → commands), and no
package reaches into another's private names. Read from the source with ``ast``: no imports run."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "talkinghead"

#: The foundation every part may use: errors, files, progress, signals, argument checks, config, checkpoints.
BASE = {"errors", "fileio", "progress", "signals", "validation", "config", "checkpoint"}
#: What each part of the package may import besides itself (README's code map says the same).
MAY_IMPORT = {
    "errors": set(),
    "fileio": {"errors"}, "progress": {"errors"}, "signals": {"errors"}, "validation": {"errors"},
    "config": {"errors"},
    "checkpoint": {"errors", "fileio", "config"},
    "data": BASE,
    "losses": BASE,
    "models": BASE | {"data"},
    "train": BASE | {"data", "losses", "models"},
    "infer": BASE | {"data", "losses", "models", "train"},  # fine-tuning is training
    "eval": BASE | {"data", "losses", "models", "infer"},  # evaluates avatars, never trains
    "webapp": BASE | {"data", "models", "infer"},
    "commands": BASE | {"data", "losses", "models", "train", "infer", "eval", "webapp"},
    "__init__": BASE | {"data", "infer"},  # the lazy public API: Avatar, Config, landmarks_to_sketch
    "cli": BASE | {"__init__", "commands"},
}


def part_of(path: Path, package: Path = PACKAGE) -> str:
    """``data`` for src/talkinghead/data/warp.py, ``config`` for src/talkinghead/config.py."""
    rel = path.relative_to(package)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imported(path: Path, package: Path = PACKAGE) -> list[tuple[int, str, list[str]]]:
    """(line, absolute module, imported names) for every import of ``talkinghead`` in ``path``
    (relative imports are resolved against ``path``'s place in ``package``)."""
    rel = path.relative_to(package).with_suffix("") if path.is_relative_to(package) else Path(path.stem)
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = ["talkinghead", *rel.parts[:-1]][: len(rel.parts) + 1 - node.level]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module == "talkinghead" or module.startswith("talkinghead."):
                out.append((node.lineno, module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names
                    if a.name == "talkinghead" or a.name.startswith("talkinghead.")]
    return out


def target_parts(module: str, names: list[str]) -> list[str]:
    """The package parts an import reaches: ``from talkinghead import signals`` reaches ``signals``."""
    parts = module.split(".")
    if len(parts) > 1:
        return [parts[1]]
    return [n if n in MAY_IMPORT else "__init__" for n in names] or ["__init__"]


def layer_violations(paths: list[Path], package: Path = PACKAGE) -> list[str]:
    """Imports of a part that the importing module's part may not use (:data:`MAY_IMPORT`)."""
    found = []
    for path in paths:
        own = part_of(path, package)
        for line, module, names in imported(path, package):
            for target in target_parts(module, names):
                if target != own and target not in MAY_IMPORT[own]:
                    found.append(f"{path}:{line}: {own} imports {module} ({target})")
    return found


def private_imports(paths: list[Path], package: Path = PACKAGE) -> list[str]:
    """Imports of a ``_private`` module or name from another part (scripts have no part)."""
    found = []
    for path in paths:
        own = part_of(path, package) if path.is_relative_to(package) else None
        for line, module, names in imported(path, package):
            parts = module.split(".")
            private_module = any(p.startswith("_") and not p.startswith("__") for p in parts)
            private_names = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if (private_module or private_names) and (len(parts) < 2 or parts[1] != own):
                found.append(f"{path}:{line}: from {module} import {', '.join(names)}")
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_part_of_the_package_says_what_it_may_import():
    assert {part_of(p) for p in SOURCES} <= set(MAY_IMPORT)
    assert len(SOURCES) > 50 and sum(len(imported(p)) for p in SOURCES) > 200  # the parser sees imports


def test_layers_run_one_way():
    found = layer_violations(SOURCES)
    assert not found, "\n".join(found)


def test_no_package_imports_another_packages_private_names():
    found = private_imports(SOURCES)
    assert not found, "\n".join(found)


@pytest.mark.parametrize("folder", ["benchmarks", "experiments"])
def test_scripts_use_only_public_names(folder):
    found = private_imports(sorted((REPO / folder).rglob("*.py")))
    assert not found, "\n".join(found)


def test_the_checks_catch_what_they_forbid(tmp_path):
    package = tmp_path / "talkinghead"
    (package / "infer").mkdir(parents=True)
    (package / "eval").mkdir()
    probe = package / "infer" / "probe.py"
    probe.write_text("import numpy\nfrom talkinghead.data.warp import warp_image\n"
                     "from talkinghead.eval.metrics import nme\nfrom ..train import steps\n"
                     "from .avatar import _private_helper\n")
    (package / "eval" / "probe.py").write_text("from talkinghead.infer.avatar import _with_overrides\n"
                                               "from talkinghead.train.steps import build_content_loss\n")
    assert [v.split(": ", 1)[1] for v in layer_violations([probe], package)] == [
        "infer imports talkinghead.eval.metrics (eval)"]
    assert [v.split(": ", 1)[1] for v in layer_violations([package / "eval" / "probe.py"], package)] == [
        "eval imports talkinghead.train.steps (train)"]
    assert private_imports([probe], package) == []  # its own package's private name
    assert len(private_imports([package / "eval" / "probe.py"], package)) == 1
