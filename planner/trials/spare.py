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
from collections.abc import Iterator, Sequence

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

_lock = threading.Lock()
_state: dict = {"enabled": False, "proc": None, "env": None}


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


def take(env: dict[str, str]) -> subprocess.Popen | None:
    """The waiting spare when it was started with `env` and is alive, else `None`."""
    with _lock:
        proc, spare_env = _state["proc"], _state["env"]
        _state["proc"] = _state["env"] = None
    if proc is None:
        return None
    if spare_env == env and proc.poll() is None:
        return proc
    _kill(proc)
    return None


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
        _state["proc"] = subprocess.Popen(
            list(command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**env, PRELOAD_ENV: ",".join(PRELOAD_MODULES)},
            start_new_session=True,  # as run_trial's children: a kill reaches its group
        )
        _state["env"] = env
    return True


def discard() -> None:
    """Kill the waiting spare, if any."""
    with _lock:
        proc = _state["proc"]
        _state["proc"] = _state["env"] = None
    if proc is not None:
        _kill(proc)


def _memory_allows(memory_limit_bytes: int | None) -> bool:
    import psutil

    available = psutil.virtual_memory().available
    return available >= (memory_limit_bytes or 0) + SPARE_RESERVE_BYTES


def _kill(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        with contextlib.suppress(OSError):
            if stream is not None:
                stream.close()


atexit.register(discard)
