"""Atomic writes: a failed write keeps the previous file and leaves no temporary file."""

import errno
import os

import pytest

from trainer import atomic
from trainer.errors import DiskFullError


def test_write_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "m.json"
    atomic.write_json(target, {"a": 1})
    atomic.write_json(target, {"a": 2})
    assert target.read_text().strip().endswith("}")
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_disk_full_keeps_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "best.weights.h5"
    target.write_bytes(b"old good checkpoint")

    def full(_tmp):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(DiskFullError, match="best.weights.h5: disk full"):
        atomic.write_with(target, full)
    assert target.read_bytes() == b"old good checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["best.weights.h5"]


def test_interrupt_during_write_keeps_previous_file(tmp_path):
    target = tmp_path / "plan.json"
    target.write_text("{}")

    def interrupted(tmp):
        tmp.write_text('{"half": ')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic.write_with(target, interrupted)
    assert target.read_text() == "{}"
    assert len(list(tmp_path.iterdir())) == 1


def test_atomic_writes_never_touch_the_process_umask(tmp_path, monkeypatch):
    """Issue 16: setting the umask to 0, even for a moment, is process-wide (other threads
    create files then). The kernel applies the umask through os.open's mode instead."""
    current = os.umask(0o027)
    os.umask(current)

    def forbidden(*_args):
        raise AssertionError("os.umask called")

    try:
        os.umask(0o027)
        monkeypatch.setattr(os, "umask", forbidden)
        atomic.write_json(tmp_path / "plan.json", {"a": 1})
        with atomic.atomic_path(tmp_path / "w.weights.h5", suffix=".weights.h5") as tmp:
            tmp.write_bytes(b"x")
    finally:
        monkeypatch.undo()
        os.umask(current)
    assert (tmp_path / "plan.json").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "w.weights.h5").stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json", "w.weights.h5"]
