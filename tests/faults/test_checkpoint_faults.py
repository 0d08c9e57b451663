"""Checkpoint writes that cannot finish: a full disk (real and injected) and the byte bound.

Each keeps the previous checkpoint, byte for byte, and leaves no temporary file.
A tiny Dense model stands in for the U-Net: the writer is the same
(`RunDir.save_weights` -> Keras `save_weights` -> HDF5).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import namedtuple

import numpy as np
import pytest

from tests.faults.common import REPO, h5_opens
from trainer.errors import DiskFullError
from trainer.train.run_dir import RunDir


@pytest.fixture(scope="module")
def model():
    import keras

    m = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64)])
    m.compile(optimizer="adam", loss="mse")
    return m


def _saved_then_changed(model, run: RunDir) -> bytes:
    run.save_weights(model, run.best_path, None, 0)
    model.set_weights([w + 1 for w in model.get_weights()])
    return run.best_path.read_bytes()


def test_the_byte_bound_refuses_before_the_rename_and_keeps_the_previous_file(tmp_path, model):
    run = RunDir(tmp_path)
    before = _saved_then_changed(model, run)
    with pytest.raises(DiskFullError, match=r"checkpoints.max_bytes=1000"):
        run.save_weights(model, run.best_path, 1000, 0)
    assert run.best_path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["best.weights.h5"]


def test_too_little_free_space_is_refused_before_hdf5_writes(tmp_path, model, monkeypatch):
    run = RunDir(tmp_path)
    before = _saved_then_changed(model, run)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(DiskFullError, match=r"best.weights.h5: disk full: .* 1000 are free"):
        run.save_weights(model, run.best_path, None, 0)
    assert run.best_path.read_bytes() == before and h5_opens(run.best_path)
    assert [p.name for p in tmp_path.iterdir()] == ["best.weights.h5"]


# -- a real full disk: a 1.5 MiB tmpfs in a user namespace ---------------------------------


def _can_mount_tmpfs() -> bool:
    if not shutil.which("unshare"):
        return False
    with tempfile.TemporaryDirectory() as d:
        probe = f"mount -t tmpfs -o size=64k tmpfs {d}"
        done = subprocess.run(["unshare", "-rm", "sh", "-c", probe], capture_output=True)
        return done.returncode == 0


FULL_DISK_CHILD = """
import json, sys
import numpy as np, keras
from trainer.errors import DiskFullError
from trainer.train.run_dir import RunDir
run = RunDir(sys.argv[1])
model = keras.Sequential([keras.Input((512,)), keras.layers.Dense(512)])  # 1 MiB of weights
run.save_weights(model, run.best_path, None, 0)
before = [w.copy() for w in model.get_weights()]
model.set_weights([w + 1 for w in before])
try:
    run.save_weights(model, run.best_path, None, 0)
    error = None
except DiskFullError as exc:
    error = str(exc)
model.load_weights(str(run.best_path))
kept = all(np.array_equal(a, b) for a, b in zip(model.get_weights(), before))
print(json.dumps({"error": error, "kept": kept, "files": sorted(p.name for p in run.path.iterdir())}))
"""


def _run_on_small_tmpfs(tmp_path, child_source: str) -> subprocess.CompletedProcess:
    """Run `child_source` with a 1.5 MiB tmpfs mounted (user namespace) as its argument."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = tmp_path / "child.py"
    script.write_text(child_source)
    shell = f"mount -t tmpfs -o size=1536k tmpfs {mnt} && {sys.executable} {script} {mnt}"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", shell], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.mark.slow
@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs `unshare -rm` to mount a small tmpfs")
def test_a_really_full_disk_raises_disk_full_and_keeps_the_previous_checkpoint(tmp_path):
    done = _run_on_small_tmpfs(tmp_path, FULL_DISK_CHILD)
    # 0, not 139: HDF5 never started a write it could not finish (it crashes at exit then).
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert "best.weights.h5: disk full" in (report["error"] or "")
    assert "the previous version was kept" in report["error"]
    assert report["kept"] and report["files"] == ["best.weights.h5"]


# The disk fills *during* the write: the free-space check above is fooled (another
# process takes the space after it), so the 1 MiB of weights meets a full disk half-way.
FILLED_DURING_WRITE_CHILD = FULL_DISK_CHILD.replace(
    "run = RunDir(sys.argv[1])",
    "import shutil, collections\n"
    "usage = collections.namedtuple('usage', 'total used free')\n"
    "shutil.disk_usage = lambda p: usage(2**40, 0, 2**40)\n"
    "run = RunDir(sys.argv[1])",
)


@pytest.mark.slow
@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs `unshare -rm` to mount a small tmpfs")
def test_a_disk_filled_during_the_write_ends_with_a_clear_error_and_nothing_torn(tmp_path):
    """Issue 16, the fault suite's open case: HDF5 met ENOSPC half-way and the process
    crashed at exit (SIGSEGV, 139). The file's space is now reserved before HDF5 writes
    (`run_dir.write_weights`), so the full disk is an ordinary error found there."""
    done = _run_on_small_tmpfs(tmp_path, FILLED_DURING_WRITE_CHILD)
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert "best.weights.h5: disk full while writing" in (report["error"] or "")
    assert report["kept"] and report["files"] == ["best.weights.h5"]


# And where no space is reserved (the estimate too small, or no `posix_fallocate`), HDF5
# itself meets the full disk half-way through its writes: the case that crashed at exit.
UNRESERVED_WRITE_CHILD = FILLED_DURING_WRITE_CHILD.replace(
    "run = RunDir(sys.argv[1])",
    "import os\ndel os.posix_fallocate\nrun = RunDir(sys.argv[1])",
)


@pytest.mark.slow
@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs `unshare -rm` to mount a small tmpfs")
def test_a_full_disk_inside_hdf5s_own_writes_is_kept_from_hdf5_and_raised_after(tmp_path):
    """The sink HDF5 writes through keeps the ENOSPC from HDF5, which closes normally; the
    error is raised after `save_weights` returns: exit 0, not 139, and nothing torn."""
    done = _run_on_small_tmpfs(tmp_path, UNRESERVED_WRITE_CHILD)
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert "best.weights.h5: disk full while writing" in (report["error"] or "")
    assert report["kept"] and report["files"] == ["best.weights.h5"]


def test_weights_go_straight_to_the_file_and_read_back_the_same(tmp_path, model):
    """`write_weights` (HDF5 through the file sink, space reserved) writes the bytes HDF5
    writes into memory (the same file-object driver), cut to HDF5's own end despite the
    reservation, and they load back as the same weights."""
    import io

    from trainer.train.run_dir import write_weights

    direct = tmp_path / "direct.weights.h5"
    direct.touch()
    write_weights(model, direct, 10 * 2**20)

    class Memory(io.BytesIO):
        def __str__(self):
            return "memory.weights.h5"

    memory = Memory()
    model.save_weights(memory)
    assert direct.read_bytes() == memory.getvalue()
    before = [w.copy() for w in model.get_weights()]
    model.set_weights([w + 1 for w in before])
    model.load_weights(str(direct))
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), before, strict=True))


def test_weights_bytes_estimate_covers_the_file(tmp_path, model):
    from trainer.train.run_dir import _expected_bytes

    run = RunDir(tmp_path)
    estimate = _expected_bytes(model, [])
    run.save_weights(model, run.best_path, None, 0)
    assert estimate >= run.best_path.stat().st_size
    assert np.isclose(
        _expected_bytes(model, [run.best_path]),
        run.best_path.stat().st_size * 1.05,
        rtol=0.01,
        atol=70_000,
    )


# -- the best file moves only with state.json ---------------------------------------------


def test_a_best_written_but_not_committed_is_dropped_on_resume(tmp_path, model):
    """Killed after the new best was written, before state.json: the old best stays the best."""
    run = RunDir(tmp_path)
    run.save_weights(model, run.best_path, None, 0)
    old = run.best_path.read_bytes()
    run.commit_state({"epochs_done": 1, "best_epoch": 1}, [])
    model.set_weights([w + 1 for w in model.get_weights()])
    run.save_weights(model, run.next_best_path(2), None, 0)  # ...and the kill lands here
    run.remove_leftovers(run.read_state())  # what resume does first
    assert run.best_path.read_bytes() == old
    assert not run.next_best_path(2).exists()


def test_a_best_committed_but_not_renamed_becomes_the_best_on_resume(tmp_path, model):
    """Killed between state.json naming the new best and its rename: resume finishes it."""
    run = RunDir(tmp_path)
    run.save_weights(model, run.best_path, None, 0)
    model.set_weights([w + 1 for w in model.get_weights()])
    run.save_weights(model, run.next_best_path(2), None, 0)
    new = run.next_best_path(2).read_bytes()
    state = {"epochs_done": 2, "best_epoch": 2, "best_pending": run.next_best_path(2).name}
    from trainer.atomic import write_json

    write_json(run.state_path, {"version": 1, **state})  # ...and the kill lands here
    run.remove_leftovers(run.read_state())
    assert run.best_path.read_bytes() == new
    assert sorted(p.name for p in tmp_path.glob("*.h5")) == ["best.weights.h5"]


def test_commit_promotes_the_new_best(tmp_path, model):
    run = RunDir(tmp_path)
    run.save_weights(model, run.next_best_path(1), None, 0)
    state = {"epochs_done": 1, "best_epoch": 1, "best_pending": run.next_best_path(1).name}
    run.commit_state(state, [{"epoch": 1, "loss": 1.0}])
    assert run.best_path.exists() and not run.next_best_path(1).exists()
    assert "best_pending" not in state  # the next commit does not name it again


def test_a_file_system_that_cannot_reserve_space_still_gets_the_checkpoint(
    tmp_path, model, monkeypatch
):
    """`posix_fallocate` unsupported (EOPNOTSUPP, e.g. some network file systems): the
    write goes on without the reservation; ENOSPC from it is never swallowed."""
    import errno
    import os

    from trainer.train import run_dir as rd

    def unsupported(fd, offset, length):
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))

    monkeypatch.setattr(os, "posix_fallocate", unsupported)
    run = RunDir(tmp_path)
    run.save_weights(model, run.best_path, None, 0)
    before = [w.copy() for w in model.get_weights()]
    model.set_weights([w + 1 for w in before])
    model.load_weights(str(run.best_path))
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), before, strict=True))

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(rd.DiskFullError, match="disk full while writing"):
        run.save_weights(model, run.best_path, None, 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.weights.h5"]
