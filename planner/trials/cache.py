"""The measurement cache: trial and verification results, reused when nothing that changes them did.

A trial child costs a TensorFlow import, a model build and a trace (10-40 s on a 2-core
CPU); planning the same candidates again on the same machine measures the same thing.
Each result of `planner.trials.trial.measure_one` (one micro-batch in a fresh child) is
stored as one JSON file named by the SHA-256 of its key: everything that changes the
result (`environment_key`: fitplan's version and the source of the code a child runs,
TensorFlow/Keras/Python versions, the device's identity; and the `TrialSpec` fields and
the micro-batch). A verification run (`VERIFY_TARGET`) is keyed the same way, its plan
included: the plan names the dataset's content digest (`planner.scan`), and a separate
validation root's files are listed by path, size and mtime, so any change to the data
plans anew. Other targets (fault tests) are never cached, nor timeouts and errors.

Memory limits: an `ok` result is reused under any limit its peak is below (above it,
it reads as out of memory under the new limit); an `oom` result only under a limit at
most the one it was measured under.

Where: `$FITPLAN_CACHE_DIR`, else `$XDG_CACHE_HOME/fitplan`, else `~/.cache/fitplan`.
Files are written atomically (`trainer.atomic`: temporary file, then rename), so two
planners writing the same key at once leave one whole file; a file that cannot be read
as an entry (corrupt, partial, another format) is a miss, measured again and overwritten.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from planner.trials.spec import TrialResult, TrialSpec
from trainer.atomic import write_json
from trainer.errors import FitplanError

FORMAT = 1
ENV_VAR = "FITPLAN_CACHE_DIR"
# The verification run (planner.verified_choice): the only target besides the default cached.
VERIFY_TARGET = "planner.trials.verify_run:run"
# Plan fields that do not change what the verification run measures, left out of its key:
# the prediction and evidence it is not given to read, and the run's length (it stops
# after `updates` optimizer updates and one validation pass whatever the plan's epochs
# and time limit; under `--auto` both follow the planning time spent).
_PLAN_KEYS_IGNORED = ("prediction", "evidence", "epochs", "time_limit_s")
# Environment variables a child's memory or speed depends on.
_ENV_VARS = (
    "CUDA_VISIBLE_DEVICES",
    "TF_ENABLE_ONEDNN_OPTS",
    "TF_GPU_ALLOCATOR",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
    "OMP_NUM_THREADS",
    "MALLOC_ARENA_MAX",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_MMAP_THRESHOLD_",
    "LD_PRELOAD",
    "TF_CPU_ALLOCATOR_USE_BFC",
    "TF_CPU_BFC_MEM_LIMIT_IN_MB",
)
# The code a child runs: its source is part of the key (a version number does not
# change while fitplan is developed).
_CODE_PACKAGES = ("trainer", "planner/trials")


def cache_dir() -> Path:
    """The cache folder: `$FITPLAN_CACHE_DIR`, `$XDG_CACHE_HOME/fitplan` or `~/.cache/fitplan`."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "fitplan"


def _version(dist: str) -> str | None:
    """A distribution's version without importing it (TensorFlow stays out of the parent)."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """SHA-256 over the source of the packages a trial child runs (`_CODE_PACKAGES`)."""
    root = Path(__file__).resolve().parents[2]
    h = hashlib.sha256()
    for pkg in _CODE_PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def environment_key(hardware: dict[str, Any], device: str) -> dict[str, Any]:
    """Everything outside a `TrialSpec` that changes what a child measures.

    Args:
        hardware: the `planner.hardware.probe` report (CPU model, flags, usable cores;
            each GPU's name, UUID and driver).
        device: `"cpu"` or `"gpu"`: GPUs count only for GPU trials.
    """
    tf = _version("tensorflow") or _version("tensorflow-cpu")
    cpu = hardware.get("cpu", {})
    key: dict[str, Any] = {
        "fitplan": _version("fitplan"),
        "code": code_digest(),
        "tensorflow": tf,
        "keras": _version("keras"),
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "machine": platform.machine(),
        "cpu": {
            "model": cpu.get("model"),
            "flags": cpu.get("flags"),
            "usable_cpus": cpu.get("usable_cpus"),
        },
        "env": {v: os.environ.get(v) for v in _ENV_VARS},
        "device": device,
    }
    if device == "gpu":
        key["gpus"] = [
            {
                k: g.get(k)
                for k in (
                    "name",
                    "uuid",
                    "driver_version",
                    "cuda_driver_version",
                    "memory_total_bytes",
                )
            }
            for g in hardware.get("gpus", [])
        ]
    return key


def _val_listing(val: str | None) -> list[list[Any]] | None:
    """(path, size, mtime_ns) of every file under a separate validation root."""
    if not val:
        return None
    root = Path(val)
    out = []
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = p.stat()
            out.append([str(p.relative_to(root)), st.st_size, st.st_mtime_ns])
    return out


class TrialCache:
    """Trial and verification results on disk, for one machine and environment.

    Args:
        env: `environment_key(...)`.
        root: the cache folder. Defaults to `cache_dir()`.
    """

    def __init__(self, env: dict[str, Any], root: str | os.PathLike | None = None):
        self.env = env
        self.root = Path(root) if root is not None else cache_dir()

    def key_inputs(self, spec: TrialSpec, micro_batch: int) -> dict[str, Any] | None:
        """What the result of `spec` at `micro_batch` depends on; `None`: never cached."""
        if spec.target is not None and spec.target != VERIFY_TARGET:
            return None
        fields = spec.to_dict()
        fields["micro_batches"] = [int(micro_batch)]
        if spec.target == VERIFY_TARGET:
            args = dict(fields.pop("target_args"))
            plan = {k: v for k, v in args.pop("plan", {}).items() if k not in _PLAN_KEYS_IGNORED}
            # The budget is the run's memory guard (trainer.train.callbacks): the memory
            # limit rule of `get` covers it, as for a trial's limit.
            plan["target"] = {
                k: v for k, v in (plan.get("target") or {}).items() if k != "budget_bytes"
            }
            args["plan"] = plan
            args["val_files"] = _val_listing((plan.get("data") or {}).get("val"))
            fields["target_args"] = args
        return {"format": FORMAT, "env": self.env, "spec": fields}

    def path_for(self, inputs: dict[str, Any]) -> Path:
        blob = json.dumps(inputs, sort_keys=True, default=str).encode()
        return self.root / f"{hashlib.sha256(blob).hexdigest()}.json"

    def get(
        self, spec: TrialSpec, micro_batch: int, memory_limit_bytes: int | None
    ) -> TrialResult | None:
        """The stored result usable under `memory_limit_bytes`, marked cached; else `None`."""
        inputs = self.key_inputs(spec, micro_batch)
        if inputs is None:
            return None
        entry = _read(self.path_for(inputs))
        if entry is None or entry.get("inputs") != json.loads(json.dumps(inputs, default=str)):
            return None
        try:
            r = TrialResult.from_dict(entry["result"])
        except (KeyError, TypeError, ValueError):
            return None
        measured_limit = entry.get("memory_limit_bytes")
        details = {**r.details, "cached": True, "cached_limit_bytes": measured_limit}
        r = dataclasses.replace(r, child_pid=None, details=details)
        if r.status == "oom":
            # Out of memory under L: also under any limit <= L; above it, unknown.
            if measured_limit is None or (
                memory_limit_bytes is not None and memory_limit_bytes <= measured_limit
            ):
                return r
            return None
        if r.status != "ok" or r.peak_bytes is None:
            return None
        if memory_limit_bytes is not None and r.peak_bytes > memory_limit_bytes:
            reason = (
                f"cached peak {r.peak_bytes} bytes exceeds the memory limit "
                f"{memory_limit_bytes} bytes"
            )
            return dataclasses.replace(r, status="oom", reason=reason)
        return r

    def put(
        self,
        spec: TrialSpec,
        micro_batch: int,
        memory_limit_bytes: int | None,
        result: TrialResult,
    ) -> bool:
        """Store `result` if it is reusable (ok or out of memory); `True` when written.

        A write that fails (read-only or full disk) is skipped: the cache only saves time.
        """
        inputs = self.key_inputs(spec, micro_batch)
        if inputs is None or result.status not in ("ok", "oom") or result.details.get("cached"):
            return False
        stored = dataclasses.replace(result, child_pid=None)
        entry = {
            "inputs": inputs,
            "memory_limit_bytes": memory_limit_bytes,
            "result": stored.to_dict(),
        }
        try:
            write_json(self.path_for(inputs), json.loads(json.dumps(entry, default=str)))
        except (OSError, FitplanError, ValueError):
            return False
        return True

    def has(self, spec: TrialSpec, micro_batch: int, memory_limit_bytes: int | None) -> bool:
        return self.get(spec, micro_batch, memory_limit_bytes) is not None


def _read(path: Path) -> dict[str, Any] | None:
    """A cache file's entry, or `None` when missing, partial, corrupt or of another format."""
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("inputs"), dict):
        return None
    if entry["inputs"].get("format") != FORMAT:
        return None
    return entry


def for_plan(hardware: dict[str, Any], device: str, enabled: bool) -> TrialCache | None:
    """The cache for one planning run, or `None` under `--no-cache`."""
    return TrialCache(environment_key(hardware, device)) if enabled else None


def info(root: str | os.PathLike | None = None) -> dict[str, Any]:
    """The cache's location, entry count and size in bytes (`fitplan cache`)."""
    root = Path(root) if root is not None else cache_dir()
    files = sorted(root.glob("*.json")) if root.is_dir() else []
    size = 0
    for f in files:
        try:
            size += f.stat().st_size
        except OSError:  # removed by another process meanwhile
            pass
    return {"path": str(root), "entries": len(files), "bytes": size}


def clear(root: str | os.PathLike | None = None) -> int:
    """Remove every entry (and left-over temporary files); returns the entries removed."""
    root = Path(root) if root is not None else cache_dir()
    if not root.is_dir():
        return 0
    removed = 0
    for f in root.iterdir():
        if f.is_file() and (f.suffix == ".json" or f.name.startswith(".")):
            try:
                f.unlink()
                removed += f.suffix == ".json"
            except FileNotFoundError:
                pass
    return removed
