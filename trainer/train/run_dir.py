"""The run directory: every file a training run leaves, written so a kill loses nothing.

Layout (docs/runs.md):

    RUN/plan.json              the plan that ran (updated if the run stepped down)
    RUN/state.json             resume state: epochs done, which `last` file, best so far
    RUN/history.csv            one row per epoch
    RUN/best.weights.h5        best weights by the plan's monitor
    RUN/last-eNNNN.weights.h5  weights + optimizer state after epoch NNNN (resume)
    RUN/metrics.json           the final summary (with the software versions)
    RUN/train.log              every line training printed (`tracking.run_log`)
    RUN/tensorboard/           TensorBoard event files, one point per epoch

Protocol for `last`: write the new file under a new name (atomically), then
`state.json` naming it (atomically), then delete the old one. A kill at any point
leaves `state.json` naming a complete file; files it does not name are leftovers
of an interrupted write and are removed on resume. A new best goes the same way:
`best-next-eNNNN.weights.h5`, then `state.json` naming it (`best_pending`), then a
rename over `best.weights.h5`; resume finishes the rename of the file `state.json`
names and deletes any other, so the best file always matches `best_epoch`.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

from trainer.atomic import fsync_dir, write_json, write_text, write_with
from trainer.errors import DiskFullError, RunDirError
from trainer.plan import Plan, load_plan, save_plan

# The metrics.json fields that say how a run went, in the order the views show them
# (`fitplan train`'s table, `fitplan report`).
SUMMARY_KEYS = (
    "best_val_dice",
    "best_epoch",
    "epochs",
    "stopped_by",
    "wall_time_s",
    "images_per_s",
)

STATE_VERSION = 1
TRAIN_LOG = "train.log"
TENSORBOARD_DIR = "tensorboard"


class RunDir:
    """A training run's directory. Create with `RunDir.create` or `RunDir.open_for_resume`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    # -- paths -------------------------------------------------------------
    @property
    def plan_path(self) -> Path:
        return self.path / "plan.json"

    @property
    def state_path(self) -> Path:
        return self.path / "state.json"

    @property
    def history_path(self) -> Path:
        return self.path / "history.csv"

    @property
    def best_path(self) -> Path:
        return self.path / "best.weights.h5"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    @property
    def log_path(self) -> Path:
        return self.path / TRAIN_LOG

    @property
    def tensorboard_path(self) -> Path:
        return self.path / TENSORBOARD_DIR

    def next_best_path(self, epoch: int) -> Path:
        return self.path / f"best-next-e{epoch:04d}.weights.h5"

    def last_path(self, epoch: int) -> Path:
        return self.path / f"last-e{epoch:04d}.weights.h5"

    # -- lifecycle ---------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike, plan: Plan) -> RunDir:
        """Start a new run in `path`; refuse a folder that already holds a run."""
        run = cls(path)
        if run.path.exists() and not run.path.is_dir():
            raise RunDirError(f"{run.path}: exists and is not a folder")
        if run.plan_path.exists() or run.state_path.exists():
            raise RunDirError(
                f"{run.path}: already holds a run",
                hint="continue it with `fitplan train --resume`, or choose another --out",
            )
        try:
            run.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirError(f"{run.path}: cannot create the run folder ({exc.strerror})") from exc
        save_plan(plan, run.plan_path)
        return run

    @classmethod
    def open_for_resume(cls, path: str | os.PathLike) -> tuple[RunDir, Plan, dict[str, Any] | None]:
        """Open an existing run: its plan and its state (`None` if no epoch finished)."""
        run = cls(path)
        if not run.plan_path.exists():
            raise RunDirError(f"{run.path}: no plan.json here, so there is no run to resume")
        plan = load_plan(run.plan_path)
        state = run.read_state()
        run.remove_leftovers(state)
        if state is not None:
            state.pop("best_pending", None)
        return run, plan, state

    def read_state(self) -> dict[str, Any] | None:
        if not self.state_path.exists():
            return None
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RunDirError(f"{self.state_path}: unreadable resume state ({exc})") from exc
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise RunDirError(f"{self.state_path}: not a fitplan resume state (version 1)")
        last = state.get("last_weights")
        if last and not (self.path / last).exists():
            raise RunDirError(f"{self.path / last}: named by state.json but missing")
        return state

    def remove_leftovers(self, state: dict[str, Any] | None) -> None:
        """Delete `last-*` files that `state.json` does not name, and stale temp files.

        A `best-next` file becomes the best file if `state.json` names it
        (`best_pending`), else it is the leftover of an epoch that never committed.
        """
        pending = state.get("best_pending") if state else None
        for p in self.path.glob("best-next-e*.weights.h5"):
            if p.name == pending:
                os.replace(p, self.best_path)
                fsync_dir(self.path)
            else:
                p.unlink(missing_ok=True)
        keep = state.get("last_weights") if state else None
        for p in self.path.glob("last-e*.weights.h5"):
            if p.name != keep:
                p.unlink(missing_ok=True)
        for p in self.path.glob(".*.tmp*"):
            p.unlink(missing_ok=True)

    # -- writing -----------------------------------------------------------
    def save_plan(self, plan: Plan) -> None:
        save_plan(plan, self.plan_path)

    def save_weights(self, model: Any, target: Path, max_bytes: int | None, others: int) -> int:
        """Write `model`'s weights atomically to `target`; return the file size.

        `others` is the byte count of the run's other checkpoints; the write is
        refused (the old file kept) when the total would exceed `max_bytes`. It is
        also refused up front when the disk clearly lacks the space: HDF5 cannot
        recover from a write that fails half-way (the process crashes at exit,
        docs/reliability.md), so a full disk is best found before writing.
        """
        need = _expected_bytes(model, [target, self.best_path, *self.path.glob("last-e*.h5")])
        free = shutil.disk_usage(self.path).free
        if free < need:
            raise DiskFullError(
                f"{target}: disk full: the checkpoint needs about {need} bytes and {free} are "
                "free; the previous version was kept",
                hint="free some space, then continue with `fitplan train --resume`",
            )
        sizes: list[int] = []

        def write(tmp: Path) -> None:
            # HDF5 writes straight into the temporary file, whose space is reserved
            # first (`write_weights`): a full disk is an ordinary OSError before HDF5
            # starts, which `write_with` turns into DiskFullError (issue 16).
            write_weights(model, tmp, need)
            size = tmp.stat().st_size
            if max_bytes is not None and size + others > max_bytes:
                # Checked before the rename, so the previous file is still there.
                raise DiskFullError(
                    f"{target}: checkpoints would take {size + others} bytes, over the plan's "
                    f"checkpoints.max_bytes={max_bytes}",
                    hint='raise checkpoints.max_bytes or set checkpoints.keep to "best"',
                )
            sizes.append(size)

        write_with(target, write, suffix=".weights.h5")
        return sizes[0]

    def commit_state(self, state: dict[str, Any], history: list[dict[str, Any]]) -> None:
        """Write history then state (the commit point), then drop the superseded `last` file."""
        write_text(self.history_path, history_csv(history))
        write_json(self.state_path, {"version": STATE_VERSION, **state})
        self.remove_leftovers(state)
        state.pop("best_pending", None)

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        write_json(self.metrics_path, metrics)

    def remove_if_no_epoch(self) -> None:
        """A run that failed before its first epoch leaves nothing behind (no half-built folder)."""
        if self.state_path.exists():
            return
        with contextlib.suppress(OSError):
            self.plan_path.unlink(missing_ok=True)
            self.log_path.unlink(missing_ok=True)
            shutil.rmtree(self.tensorboard_path, ignore_errors=True)
            for p in self.path.glob(".*.tmp*"):
                p.unlink(missing_ok=True)
            if self.path.exists() and not any(self.path.iterdir()):
                shutil.rmtree(self.path)


def write_weights(model: Any, path: Path, reserve: int) -> None:
    """`model.save_weights` straight into the existing file `path`, its space reserved first.

    Why not a path: HDF5 cannot recover from ENOSPC half-way through its own write (the
    process then crashed at exit with SIGSEGV, 139; docs/reliability.md). Why not into
    memory (fitplan until stop 28: `io.BytesIO`, then one plain write): the whole file
    then sits in RAM beside the model, and a checkpoint write set the verification run's
    peak (efficientnet_b0 384x384: +108 MiB over the train steps; measured by hand with
    `model.save_weights` into memory 190-207 MiB over the resident set for a 116 MiB file,
    against 53-61 MiB for this, bytes identical; docs/runs.md, "The checkpoint write").

    So: `posix_fallocate` reserves `reserve` bytes (the estimate with its margin), where
    a full disk raises an ordinary `OSError(ENOSPC)` before HDF5 starts; HDF5 then writes
    through `_FileSink` into blocks that are already the file's; the file is cut to what
    HDF5 wrote. Should a write still fail inside HDF5 (an estimate too small and the disk
    full), the sink keeps the error from HDF5, which closes normally, and it is raised
    here instead; the caller's `write_with` removes the file. Where the file system
    cannot reserve (EOPNOTSUPP, EINVAL, ENOSYS), HDF5 writes without the reservation and
    that kept error is the protection.
    """
    with open(path, "r+b") as fh:
        if reserve > 0 and hasattr(os, "posix_fallocate"):
            try:
                os.posix_fallocate(fh.fileno(), 0, reserve)
            except OSError as exc:
                # A file system that cannot reserve: the sink below still keeps a full
                # disk from HDF5. Any other error (ENOSPC above all) is the caller's.
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
        sink = _FileSink(fh)
        model.save_weights(sink)
        if sink.error is not None:
            raise sink.error
        fh.truncate(sink.size)


class _FileSink(io.BytesIO):
    """The file-like object HDF5 writes the weights through: a `BytesIO` in type only.

    Keras' `H5IOStore` takes a path or an `io.BytesIO` (keras/src/saving/saving_lib.py)
    and h5py writes to such an object through its methods (h5py's file-object driver:
    seek, tell, read, readinto, write, truncate, flush), so each of those goes to the open
    file `fh` instead of the memory buffer, which stays empty. `str()` ends in
    `.weights.h5`, which `save_weights` checks. The file was made longer by the
    reservation, so the end HDF5 sees (`seek(0, 2)`, `truncate`) is the end of what it
    wrote (`size`), not of the file. An `OSError` on a write is kept (`error`) and later
    writes are dropped, so that HDF5 never meets it.
    """

    def __init__(self, fh: Any):
        super().__init__()
        self._fh = fh
        self.size = 0
        self.error: OSError | None = None

    def __str__(self) -> str:
        return "file.weights.h5"

    def write(self, data: Any) -> int:
        n = len(memoryview(data).cast("B"))
        if self.error is None:
            try:
                self._fh.write(data)
                self.size = max(self.size, self._fh.tell())
            except OSError as exc:
                self.error = exc
        return n

    def read(self, n: int | None = -1) -> bytes:
        return self._fh.read(n)

    def readinto(self, buffer: Any) -> int:
        return self._fh.readinto(buffer)

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence == io.SEEK_END:
            pos, whence = self.size + pos, io.SEEK_SET
        return self._fh.seek(pos, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def truncate(self, size: int | None = None) -> int:
        self.size = self._fh.tell() if size is None else int(size)
        return self.size

    def flush(self) -> None:
        if self.error is None:
            try:
                self._fh.flush()
            except OSError as exc:
                self.error = exc


def _expected_bytes(model: Any, existing: list[Path]) -> int:
    """Bytes a new checkpoint of `model` will take, with a margin for HDF5's metadata.

    The largest checkpoint already written when there is one (same model, same
    optimizer), else the model's and optimizer's variables.
    """
    sizes = [p.stat().st_size for p in existing if p.exists()]
    if sizes:
        estimate = max(sizes)
    else:
        optimizer = getattr(model, "optimizer", None)
        variables = [*model.weights, *(getattr(optimizer, "variables", None) or [])]
        estimate = sum(math.prod(v.shape) * _itemsize(v.dtype) for v in variables)
    return int(estimate * 1.05) + 64 * 1024


def _itemsize(dtype: Any) -> int:
    name = str(getattr(dtype, "name", dtype))
    return (
        2 if "16" in name else 1 if name in ("int8", "uint8", "bool") else 8 if "64" in name else 4
    )


def history_csv(history: list[dict[str, Any]]) -> str:
    """History rows as CSV text; columns are the union of keys, `epoch` first."""
    if not history:
        return "epoch\n"
    cols = ["epoch"] + sorted({k for row in history for k in row} - {"epoch"})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: row.get(k, "") for k in cols})
    return buf.getvalue()


def read_history(path: Path) -> list[dict[str, Any]]:
    """Parse history.csv back into rows of floats (epoch as int)."""
    if not path.exists():
        return []
    rows = []
    with open(path, newline="", encoding="utf-8") as fh:
        for raw in csv.DictReader(fh):
            row: dict[str, Any] = {}
            for k, v in raw.items():
                if v in ("", None):
                    continue
                row[k] = int(v) if k == "epoch" else float(v)
            rows.append(row)
    return rows


__all__ = [
    "SUMMARY_KEYS",
    "TENSORBOARD_DIR",
    "TRAIN_LOG",
    "RunDir",
    "history_csv",
    "load_plan",
    "read_history",
]
