"""Dry runs in child processes: one child measures several micro-batch sizes of one candidate.

The parent (this module) never imports TensorFlow or builds a model: TF cannot give GPU
memory back after an out-of-memory error, and a crash must not take the planner down.
A child (`planner.trials.child.main`, see that module) builds the trainer's own
compiled model, runs `train_on_batch` on synthetic tensors for each micro-batch size in
ascending order, and prints one JSON line per event on stdout behind `MARKER`; anything
else on stdout is garbage. The parent enforces the time limit and kills the child's
whole process group when it runs out. The child imports fitplan's own packages, never a
`planner/` or `trainer/` in the working directory (`_child_command`).

API for `planner.make_plan`:
    TrialSpec(backbone, input_size, micro_batches, precision=..., ...)   what to measure
        (`TrialSpec` and `TrialResult` live in `planner.trials.spec`, re-exported here)
    run_trial(spec, *, timeout_s, memory_limit_bytes=None, on_event=None) -> list[TrialResult]
        One child process. Results are ascending by micro-batch and stop at the first
        result that is not "ok" (larger sizes were not tried). Never raises for what
        happens in the child: an OOM, crash, hang or garbage becomes a result.
    measure_one(spec, micro_batch, *, timeout_s, memory_limit_bytes=None, cache=None) -> TrialResult
        One size in its own child: the `measure` callable `memory_model.verify` wants;
        with a `planner.trials.cache.TrialCache`, a size measured before is reused.
    measure_each(spec, *, timeout_s, memory_limit_bytes=None) -> list[TrialResult]
        Every size in its own child, ascending, stopping at the first failure: what
        the planner fits its memory line through (same-child sizes are inflated).
    TrialResult(status, micro_batch, peak_bytes, step_time_s, trace_time_s, reason, ...)
        `child_pid` and `traces` make the number of children and graph traces visible:
        `len({r.child_pid for r in results})` children, `sum(r.traces ...)` traces.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import planner
import trainer
from planner.trials import spare
from planner.trials.cache import TrialCache
from planner.trials.spec import DEFAULT_TARGET, MARKER, TrialResult, TrialSpec
from trainer.oom import classify_exit

__all__ = ["DEFAULT_TARGET", "MARKER", "TrialResult", "TrialSpec", "measure_one", "run_trial"]

_STDERR_TAIL_LINES = 40


# The folders fitplan's own packages were imported from (one, unless split installs).
_PACKAGE_ROOTS = list(
    dict.fromkeys(str(Path(m.__file__).resolve().parents[1]) for m in (planner, trainer))
)


def _child_command(entry: str) -> list[str]:
    """The command line of a Python child that runs `entry` (`"package.module:function"`).

    `python -m` and `python -c` put the working directory first on `sys.path`, so a
    user who runs fitplan in a folder holding their own `planner/` or `trainer/` would
    get *their* package imported in the child. Python 3.11's `-P` (PYTHONSAFEPATH)
    stops that, but fitplan supports 3.10, and two start-ups would mean a path that
    only some versions test. So the child always starts as `python -c` with a bootstrap
    that drops the working directory `-c` added and puts the folders fitplan was
    imported from first: one code path on every supported version.
    """
    module, _, func = entry.partition(":")
    return [
        sys.executable,
        "-c",
        f"import sys; roots = {_PACKAGE_ROOTS!r}; "
        "sys.path[:] = roots + [p for p in sys.path if p and p not in roots]; "
        f"from {module} import {func}; {func}()",
    ]


def start_spare(
    device: str, memory_limit_bytes: int | None, target: str | None = DEFAULT_TARGET
) -> bool:
    """Start a trial child ahead of the first trial (`planner.trials.spare`, `START_EARLY`):
    it imports TensorFlow while the planner scans; the first `run_trial` of `target` on
    `device` with the same environment takes it. Whether one was started."""
    if not spare.START_EARLY:
        return False
    command = _child_command("planner.trials.child:main")
    return spare.start_for(device, target, command, _device_env(device), memory_limit_bytes)


def _child_env(spec: TrialSpec) -> dict[str, str]:
    return _device_env(spec.device)


def _device_env(device: str) -> dict[str, str]:
    env = dict(os.environ)
    # The child must import what the parent imports (tests' fault targets included),
    # and nothing from the working directory the parent did not import from.
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = "-1"
    return env


def run_trial(
    spec: TrialSpec,
    *,
    timeout_s: float,
    memory_limit_bytes: int | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> list[TrialResult]:
    """Measure `spec.micro_batches` in one child process; see the module docstring.

    Args:
        spec: what to measure. Its plan is validated here first (raises `PlanError`).
        timeout_s: wall-clock limit for the whole child; then its process group is
            killed and the size in progress gets status `"timeout"`.
        memory_limit_bytes: on CPU, a soft limit: a thread in the child polls its RSS
            and reports `"oom"` with the RSS reached once it is exceeded, then exits
            (`RLIMIT_AS` is not used: TF reserves far more address space than it
            touches). On GPU, the device's memory limit (a real TF OOM above it).
            `None` (default): no limit beyond the machine's.
        on_event: called with each event dict the child reports (progress display).

    Returns:
        Results ascending by micro-batch, ending at the first one that is not ok.
    """
    if spec.target is None:
        spec.to_plan()  # a bad plan is the caller's mistake: raise here, not in the child
    payload = json.dumps({"spec": spec.to_dict(), "memory_limit_bytes": memory_limit_bytes})
    command, env = _child_command("planner.trials.child:main"), _child_env(spec)
    proc = spare.take(env) if spare.may_take(spec) else None  # started ahead: imports done
    ahead = proc is not None
    if proc is None:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,  # its own process group, so a kill reaches grandchildren
        )
    t0 = time.perf_counter()

    def on_child_event(event: dict[str, Any]) -> None:
        if event.get("event") == "start":  # its first step traces: one core to spare
            spare.start(spec, command, env, memory_limit_bytes)
        if on_event is not None:
            on_event(event)

    out = _ChildOutput(proc, on_child_event)
    timed_out = False
    try:
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(payload.encode())  # type: ignore[union-attr]
            proc.stdin.close()  # type: ignore[union-attr]
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
    finally:
        # Always: a timed-out child, Ctrl-C in the parent, or grandchildren left behind.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        out.join()
    wall = time.perf_counter() - t0
    return _collect(
        spec,
        proc.pid,
        proc.returncode,
        out.events,
        out.garbage,
        "\n".join(out.tail),
        timed_out,
        timeout_s,
        wall,
        ahead,
    )


class _ChildOutput:
    """Reads a child's pipes on two threads: its events (marker lines on stdout), any
    other stdout lines (`garbage`), and the last lines of stderr (`tail`)."""

    def __init__(self, proc: subprocess.Popen, on_event: Callable[[dict[str, Any]], None] | None):
        self.events: list[dict[str, Any]] = []
        self.garbage: list[str] = []
        self.tail: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL_LINES)
        self._on_event = on_event
        self._threads = [
            threading.Thread(target=self._read_stdout, args=(proc.stdout,), daemon=True),
            threading.Thread(target=self._read_stderr, args=(proc.stderr,), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_stdout(self, stream) -> None:
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if not line.startswith(MARKER):
                self.garbage.append(line)
                continue
            try:
                event = json.loads(line[len(MARKER) :])
                if not isinstance(event, dict):
                    raise ValueError("not an object")
            except ValueError:
                self.garbage.append(line)
                continue
            self.events.append(event)
            if self._on_event is not None:
                self._on_event(event)

    def _read_stderr(self, stream) -> None:
        for raw in stream:
            self.tail.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def join(self) -> None:
        for thread in self._threads:
            thread.join(timeout=5)


def _collect(
    spec: TrialSpec,
    pid: int,
    returncode: int | None,
    events: list[dict[str, Any]],
    garbage: list[str],
    stderr_tail: str,
    timed_out: bool,
    timeout_s: float,
    wall_s: float,
    ahead: bool = False,
) -> list[TrialResult]:
    """Turn the child's events and exit into one result per size tried (`ahead`: the
    child was a spare, started before it was needed: `planner.trials.spare`)."""
    marks = {"child_wall_s": round(wall_s, 3), **({"started_ahead": True} if ahead else {})}
    results: list[TrialResult] = []
    started: int | None = None
    ready = False
    for ev in events:
        kind = ev.get("event")
        if kind == "ready":
            ready = True
        elif kind == "start":
            started = ev.get("micro_batch")
        elif kind == "result":
            try:
                r = TrialResult.from_dict(ev.get("result", {}))
            except (TypeError, ValueError) as exc:
                garbage.append(f"malformed result {ev!r}: {exc}")
                break
            results.append(dataclasses.replace(r, child_pid=pid, details={**r.details, **marks}))
    if results and not results[-1].ok:
        return results
    done = {r.micro_batch for r in results}
    pending = [m for m in spec.micro_batches if m not in done]
    if not pending:
        return results
    mb = started if started in pending else pending[0]
    if timed_out or returncode != 0 or not garbage:
        status, reason = classify_exit(
            returncode, stderr_tail, timed_out=timed_out, timeout_s=timeout_s
        )
    else:
        status, reason = (
            "error",
            "child printed no result lines; its stdout began: " + repr("\n".join(garbage)[:200]),
        )
    if started == mb:
        where = f"at micro-batch {mb}"
    elif ready:
        where = f"after the model was built, before micro-batch {mb} started"
    else:
        where = "before the first step (starting the child or building the model)"
    results.append(
        TrialResult(
            status=status,
            micro_batch=mb,
            reason=f"{reason}; {where}",
            child_pid=pid,
            details={
                **marks,
                "returncode": returncode,
                "stderr_tail": stderr_tail[-2000:],
            },
        )
    )
    return results


def measure_one(
    spec: TrialSpec,
    micro_batch: int,
    *,
    timeout_s: float,
    memory_limit_bytes: int | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    cache: TrialCache | None = None,
) -> TrialResult:
    """Measure one micro-batch size of `spec` in a fresh child (for verification).

    Args:
        cache: where a result measured before under the same key is taken from (marked
            `details["cached"]`, no child started) and a new one is stored
            (`planner.trials.cache`). `None` (default): always measure.
    """
    if cache is not None:
        hit = cache.get(spec, micro_batch, memory_limit_bytes)
        if hit is not None:
            return hit
    one = dataclasses.replace(spec, micro_batches=(micro_batch,))
    results = run_trial(
        one, timeout_s=timeout_s, memory_limit_bytes=memory_limit_bytes, on_event=on_event
    )
    if cache is not None:
        cache.put(spec, micro_batch, memory_limit_bytes, results[-1])
    return results[-1]


def measure_each(
    spec: TrialSpec,
    *,
    timeout_s: float,
    memory_limit_bytes: int | None = None,
    cache: TrialCache | None = None,
) -> list[TrialResult]:
    """Each size of `spec` in its own fresh child, ascending; stops at the first failure.

    What the planner fits its line through. A size measured in the same child after a
    smaller one also carries that size's leftovers and a second, relaxed-shape trace,
    and its peak is inflated: at 256x256 with training BatchNorm, micro-batch 4 peaked
    at 1106 MiB after 1 in one child against 1057 MiB alone (unet_small), 1684 against
    1550 MiB (mobilenet_v3_small), and a line through the same-child pair over-predicted
    fresh runs at 8 and 16 by 10-26%; through fresh children, by 0-3%
    (docs/planning.md, "Trials"). The price: one more child per candidate (a TensorFlow
    import and a model build, ~10 s here), unless `cache` holds the size (`measure_one`).
    """
    results: list[TrialResult] = []
    for mb in spec.micro_batches:
        r = measure_one(
            spec, mb, timeout_s=timeout_s, memory_limit_bytes=memory_limit_bytes, cache=cache
        )
        results.append(r)
        if not r.ok:
            break
    return results
