"""Atomic outputs: renamed into place whole, with ordinary permissions, never half-written."""

from __future__ import annotations

import os
import stat

import pytest

from talkinghead.fileio import atomic_path, atomic_write_text


def test_atomic_output_has_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        target = tmp_path / "out.txt"
        atomic_write_text(target, "hello")
        assert target.read_text() == "hello"
        # mkstemp's 0600 would hide outputs (videos, avatars, models) from other users
        assert stat.S_IMODE(target.stat().st_mode) == 0o644
    finally:
        os.umask(old)


def test_failed_write_leaves_neither_target_nor_temp_file(tmp_path):
    target = tmp_path / "video.mp4"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.suffix == ".mp4" and tmp.parent == tmp_path  # libraries pick formats by suffix
            tmp.write_bytes(b"half a video")
            raise RuntimeError("encoder crashed")
    assert list(tmp_path.iterdir()) == []


def test_existing_target_is_replaced_only_on_success(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]
