"""One trial child started ahead: it imports TensorFlow while the child before it traces.

Every trial child and verification run is a fresh process (a peak RSS is per process,
and TF cannot give GPU memory back), so each one pays TensorFlow's and Keras' import
first: 3.9-4.2 s on the 2-vCPU AMD EPYC (AVX2), `python -c "import tensorflow, keras;
from trainer.train.fit import train"`, measured twice while another job held the CPU.
A cold plan on epfl-em runs three or four children one after another, so that is
8-12 s of the user's planning time.

While `planner.make_plan` plans (`spare_children()`), a trial child's first step
(the trace: 10-35 s there, mostly one thread, so one core idles) is when the next
child starts: the *spare*, started with `PRELOAD_ENV` so that it imports TensorFlow,
Keras and the trainer, then blocks reading its spec on stdin. The next `run_trial`
hands it its spec instead of starting a process (`take`), so it begins at the model
build. What it measures does not change: the peak is reset when the spec arrives
(`child.ChildContext`, as before the import was moved ahead of it), the same code runs
the same steps, and its import ran while the earlier child traced, not while it ran
its measured steps. `details["started_ahead"]` marks such a result.

The first child has no child before it: `planner.make_plan` starts a spare as soon as
the probe has named the device (`START_EARLY`), so it imports while the parent scans the
dataset and ranks the candidates. Measured on the stop-20 cold plan (2-vCPU AMD EPYC,
AVX2): the first child, not started ahead, spent 8.9 s from its spec to a built model
(TensorFlow's import included), the ones started ahead 1.6-2.2 s.

**Side by side** (`SIDE_BY_SIDE`): while a candidate's child runs, `planner.measure`
names the trial it expects next (`hint`: the next candidate's first size). At the
running child's first step, that trial's child starts beside it (`start_beside`), given
its trial at once and gated (`child.ChildContext.traced`): it imports, builds and traces
on the core the running child's trace leaves idle. The running child is gated too: once
it has traced, the one beside is stopped (SIGSTOP to its group, `pause_beside`) and only
then does the running child go on to its measured steps, alone on the CPU. When the
planner then asks for that trial, `take` hands the stopped child over; it is continued
and goes on past its own gate once traced, so its measured steps run alone as well: no
step time is measured beside another child (the trace times are). A child beside for a
trial the planner does not run (skipped as unable to win, or another candidate first) is
killed. A plain spare still starts at the same first step, for the child after. Needs
both trials' memory limits plus `SPARE_RESERVE_BYTES` available.

When not: on a GPU (children stay one at a time, issue 13), for test targets, for a
verification run (usually the last child: a spare would be wasted work) and when the
host has less memory available than the trial's limit plus `SPARE_RESERVE_BYTES` (the
spare holds ~0.6 GiB while it waits). A spare no one takes is killed when planning
ends (`discard`), and one whose parent dies reads end-of-file and exits.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from planner.trials.spec import DEFAULT_TARGET, PRELOAD_ENV, TrialSpec

# What a spare imports while it waits: what every real child imports first.
PRELOAD_MODULES: tuple[str, ...] = ("tensorflow", "keras", "trainer.train.fit")
# Children whose first step starts a spare (trials), and those that may take one (a
# verification run too). Tests put their own targets in.
START_FOR: set[str | None] = {None, DEFAULT_TARGET}
TAKE_FOR: set[str | None] = {None, DEFAULT_TARGET, "planner.trials.verify_run:run"}
# Memory left free beside a running child before a spare may start (it holds ~0.6 GiB).
SPARE_RESERVE_BYTES = 1 << 30
# Whether `planner.make_plan` starts a spare as planning begins, before the probe's
# budget is even used (`planner.trials.trial.start_spare`): the first trial child then
# finds TensorFlow imported. Tests whose children are fakes switch it off (tests/conftest.py).
START_EARLY = True

# Whether the next trial's child may start beside the current one (`hint`, `start_beside`).
SIDE_BY_SIDE = True

_lock = threading.Lock()
# proc/env: the plain spare waiting for any trial; beside: (process, env, key, handle) of
# the child given the trial `key` ahead (its handle: planner.trials.trial.Beside); hint:
# (spec, limit) of the trial the planner expects to run next.
_state: dict = {"enabled": False, "proc": None, "env": None, "beside": None, "hint": None}


@contextlib.contextmanager
def spare_children(enabled: bool = True) -> Iterator[None]:
    """Start spares for the trials run inside this block; kill an unused one at its end."""
    with _lock:
        before = _state["enabled"]
        _state["enabled"] = enabled
    try:
        yield
    finally:
        with _lock:
            _state["enabled"] = before
        discard()


def may_take(spec: TrialSpec) -> bool:
    return spec.device == "cpu" and spec.target in TAKE_FOR


def take(env: dict[str, str], key: str | None = None) -> tuple[subprocess.Popen, Any] | None:
    """`(process, handle)`: the child given the trial `key` ahead when it was started with
    `env` and is alive (`handle`: its `Beside`), else the plain spare when it matches
    (`handle` is `None`), else `None`. A child given another trial is killed: the
    planner went another way."""
    with _lock:
        beside = _state["beside"]
        _state["beside"] = None
        if beside is not None and beside[1:3] == (env, key) and beside[0].poll() is None:
            return beside[0], beside[3]
        proc, spare_env = _state["proc"], _state["env"]
        _state.update(proc=None, env=None)
    if beside is not None:
        _kill(beside[0])
    if proc is None:
        return None
    if spare_env == env and proc.poll() is None:
        return proc, None
    _kill(proc)
    return None


def hint(spec: TrialSpec | None, memory_limit_bytes: int | None = None) -> None:
    """The trial the planner expects to run next (`planner.measure`: the next candidate's
    first size), or `None`: the next child's first step starts it beside itself."""
    with _lock:
        _state["hint"] = None if spec is None else (spec, memory_limit_bytes)


def next_trial(spec: TrialSpec) -> tuple[TrialSpec, int | None] | None:
    """The hinted trial to start beside `spec`'s child, when side by side applies: on a
    CPU, while planning (`spare_children`), for trials (`START_FOR`), a hint that is
    not `spec` itself."""
    with _lock:
        hinted = _state["hint"]
        if not (SIDE_BY_SIDE and _state["enabled"]) or hinted is None:
            return None
    if spec.device != "cpu" or spec.target not in START_FOR or hinted[0] == spec:
        return None
    return hinted


def start_beside(
    command: Sequence[str],
    env: dict[str, str],
    memory_limit_bytes: int | None,
    key: str,
    launch: Callable[[subprocess.Popen], Any],
    next_limit_bytes: int | None,
) -> bool:
    """Start the hinted trial's child beside the running one (whose limit is
    `memory_limit_bytes`) when the host has both limits plus `SPARE_RESERVE_BYTES`
    available; `launch(proc)` gives it its trial and returns its handle (`beside`)."""
    with _lock:
        if not _state["enabled"] or _state["beside"] is not None:
            return False
        if not _memory_allows((memory_limit_bytes or 0) + (next_limit_bytes or 0)):
            return False
        proc = _spawn(command, env)
        _state["beside"] = (proc, env, key, launch(proc))
    return True


def pause_beside() -> None:
    """Stop the child started beside (SIGSTOP to its group), if any: the running child's
    measured steps then have the CPU to themselves. `take` hands it over stopped; its
    handle continues it (planner.trials.trial.Beside)."""
    with _lock:
        beside = _state["beside"]
    if beside is not None:
        beside[3].pause()


def start(
    spec: TrialSpec, command: Sequence[str], env: dict[str, str], memory_limit_bytes: int | None
) -> bool:
    """Start a spare after `spec`'s child began its first step, when allowed (above)."""
    return start_for(spec.device, spec.target, command, env, memory_limit_bytes)


def start_for(
    device: str,
    target: str | None,
    command: Sequence[str],
    env: dict[str, str],
    memory_limit_bytes: int | None,
) -> bool:
    """Start a spare for children of `target` on `device`, when allowed (module docstring):
    `start` during a child's first step, and `planner.trials.trial.start_spare` as
    planning begins (`START_EARLY`)."""
    if device != "cpu" or target not in START_FOR:
        return False
    with _lock:
        if not _state["enabled"] or _state["proc"] is not None:
            return False
        if not _memory_allows(memory_limit_bytes):
            return False
        _state.update(proc=_spawn(command, env), env=env)
    return True


def _spawn(command: Sequence[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        list(command),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**env, PRELOAD_ENV: ",".join(PRELOAD_MODULES)},
        start_new_session=True,  # as run_trial's children: a kill reaches its group
    )


def discard() -> None:
    """Kill the waiting children, if any, and forget the hint."""
    with _lock:
        procs = [_state["proc"], (_state["beside"] or (None,))[0]]
        _state.update(proc=None, env=None, beside=None, hint=None)
    for proc in procs:
        if proc is not None:
            _kill(proc)


def _memory_allows(memory_limit_bytes: int | None) -> bool:
    import psutil

    available = psutil.virtual_memory().available
    return available >= (memory_limit_bytes or 0) + SPARE_RESERVE_BYTES


def _kill(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # a stopped child dies of it too
    proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        with contextlib.suppress(OSError):
            if stream is not None:
                stream.close()


atexit.register(discard)
