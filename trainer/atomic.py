"""Atomic file writes: a crash or a full disk never leaves a half-written file.

Every file fitplan writes goes to a temporary name in the same directory, is
flushed and fsynced, then renamed over the target (rename is atomic on POSIX
within one file system). On `ENOSPC` the temporary file is removed, the old
target is left untouched and `DiskFullError` names the file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from trainer.errors import DiskFullError, RunDirError


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to `target`; rename it over `target` on success.

    Use for writers that insist on a path (Keras `save_weights`). `suffix` keeps
    the extension such writers check (e.g. `.weights.h5`).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.is_file():  # mkstemp makes 0600; give the file the umask's usual mode
            os.chmod(tmp_path, 0o666 & ~_umask())
        _fsync_file(tmp_path)
        os.replace(tmp_path, target)
        fsync_dir(target.parent)
    except OSError as exc:
        _remove_quietly(tmp_path)
        if exc.errno == errno.ENOSPC:
            raise DiskFullError(
                f"{target}: disk full while writing; the previous version was kept",
                hint="free some space or lower the plan's checkpoint limits",
            ) from exc
        raise RunDirError(f"{target}: cannot write ({exc.strerror or exc})") from exc
    except BaseException:
        _remove_quietly(tmp_path)
        raise


def write_bytes(target: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `target` atomically."""
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)


def write_text(target: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `target` atomically."""
    write_bytes(target, text.encode("utf-8"))


def write_json(target: str | os.PathLike, obj: object) -> None:
    """Write `obj` as indented JSON to `target` atomically."""
    write_text(target, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def write_with(target: str | os.PathLike, writer: Callable[[Path], None], suffix: str = "") -> None:
    """Call `writer(tmp_path)` and move the result over `target` atomically."""
    with atomic_path(target, suffix=suffix) as tmp:
        writer(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename inside `path` durable; skipped where the file system refuses it."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
