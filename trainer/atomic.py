"""Atomic file writes: a crash or a full disk never leaves a half-written file.

Every file fitplan writes goes to a temporary name in the same directory, is
flushed and fsynced, then renamed over the target (rename is atomic on POSIX
within one file system). On `ENOSPC` the temporary file is removed, the old
target is left untouched and `DiskFullError` names the file.

The temporary file is created with `os.open(..., 0o666)`, so the kernel applies the
process's umask and the file gets the mode a plain `open()` would give it. The umask
is never read or changed: `os.umask` can only be read by setting it, which for a
moment changes it for every thread of the process (a file another thread creates
then would be world-writable).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
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
    tmp_path = _new_temp(target, suffix)
    try:
        yield tmp_path
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


def exchange(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Swap two paths (e.g. a new folder and the one it replaces) in one atomic step.

    Linux `renameat2(RENAME_EXCHANGE)` (man 2 rename; glibc 2.28+): no moment exists
    where neither is in place, which two renames cannot give for a folder (a folder
    cannot be renamed over a non-empty one).

    Returns:
        `True` when swapped; `False` where the system or file system cannot (the
        caller falls back to two renames). Other errors raise `OSError`.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _new_temp(target: Path, suffix: str) -> Path:
    """Create an empty, uniquely named temporary file next to `target`.

    Mode 0o666 through `os.open`: the kernel applies the umask (`tempfile.mkstemp` would
    make it 0600, and fixing that afterwards needs the umask, see the module docstring).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp{suffix}"
        try:
            os.close(os.open(tmp, flags, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(target))


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
