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
