"""What fitplan learned about each dataset file, kept between runs by (path, stat).

Every `train`, `--resume` and out-of-memory step-down (a fresh process) checks every
pair before its first step and, when the plan records a fingerprint, recomputes the
dataset digest: both read every byte of the dataset, O(dataset) before training and
inside an `--auto` time budget. This cache keeps each file's content hash and its
integrity verdict keyed by its absolute path and `stat` (size, `st_mtime_ns`,
`st_ctime_ns`, inode), so a second start reads no file contents, only `stat`s.

Any write to a file changes its ctime (which no tool can set back, unlike mtime:
`cp -p`, `rsync -t` and `touch -d` restore mtimes), and a copy elsewhere is a new path,
so a stale entry needs a write that keeps size, mtime, ctime and inode, which the
kernel does not allow. A miss costs only the read the cache saves.

Where: `$FITPLAN_CACHE_DIR/data/`, else `$XDG_CACHE_HOME/fitplan/data/`, else
`~/.cache/fitplan/data/`; one JSON file per dataset (root and folder names), written
atomically. A cache that cannot be read is ignored, one that cannot be written is
skipped: the cache only saves time, it never changes a result.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

CACHE_VERSION = 1
_ENTRY_LIMIT = 2_000_000  # files per dataset file; beyond it, nothing is cached


def _base() -> Path:
    if os.environ.get("FITPLAN_CACHE_DIR"):
        return Path(os.environ["FITPLAN_CACHE_DIR"]).expanduser() / "data"
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "fitplan" / "data"


def stat_key(path: str | os.PathLike) -> list[int] | None:
    """`[size, mtime_ns, ctime_ns, inode]` of a regular file, or `None` (not one / gone)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not (st.st_mode & 0o170000 == 0o100000):
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


class DataCache:
    """Per-file facts of one dataset: `sha256` and `check` entries, valid for one stat.

    Thread-safe for `get`/`put`; `save` writes the file once at the end.
    """

    def __init__(self, path: Path | None, entries: dict[str, dict[str, Any]]):
        self.path = path
        self._entries = entries
        self._lock = threading.Lock()
        self._dirty = False

    @classmethod
    def open(cls, root: str | os.PathLike, images: str, masks: str) -> DataCache:
        """The cache of the dataset at `root` with these folders (empty when new or unreadable)."""
        ident = "\0".join([str(Path(root).resolve()), images, masks])
        path = _base() / f"{hashlib.sha256(ident.encode()).hexdigest()[:20]}.json"
        entries: dict[str, dict[str, Any]] = {}
        with contextlib.suppress(OSError, ValueError, TypeError):
            raw = json.loads(path.read_text(encoding="utf-8"))
            if raw.get("version") == CACHE_VERSION and isinstance(raw.get("files"), dict):
                entries = raw["files"]
        return cls(path, entries)

    @classmethod
    def disabled(cls) -> DataCache:
        """A cache that remembers nothing (for callers that must read everything)."""
        return cls(None, {})

    def get(self, path: str | os.PathLike, what: str, key: list[int] | None) -> Any:
        """The cached `what` of `path` if its stat is still `key`, else `None`."""
        if key is None or self.path is None:
            return None
        with self._lock:
            entry = self._entries.get(os.fspath(Path(path).absolute()))
        if entry is None or entry.get("stat") != key:
            return None
        return entry.get(what)

    def put(self, path: str | os.PathLike, what: str, key: list[int] | None, value: Any) -> None:
        """Remember `value` as `path`'s `what` for stat `key` (other facts of another stat drop)."""
        if key is None or self.path is None:
            return
        name = os.fspath(Path(path).absolute())
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or entry.get("stat") != key:
                entry = self._entries[name] = {"stat": key}
            if entry.get(what) != value:
                entry[what] = value
                self._dirty = True

    def save(self) -> None:
        """Write the cache if anything changed; a failure to write is ignored."""
        if self.path is None or not self._dirty or len(self._entries) > _ENTRY_LIMIT:
            return
        from trainer.atomic import write_text
        from trainer.errors import FitplanError

        with self._lock:
            text = json.dumps({"version": CACHE_VERSION, "files": self._entries})
            self._dirty = False
        with contextlib.suppress(OSError, FitplanError):
            write_text(self.path, text)


__all__ = ["CACHE_VERSION", "DataCache", "stat_key"]
