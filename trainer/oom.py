"""Out-of-memory classification: the one place that knows what running out of memory looks like.

Every caller asks here instead of matching messages itself (Lightning's `is_oom_error`
pattern). Nothing in this module imports TensorFlow: the parent process of a trial
must never load it (TF cannot give GPU memory back after an out-of-memory error), so
exceptions are recognised by class name and message.

API:
    is_oom_error(obj) -> bool
        `obj` is an exception (its class hierarchy, message and chained causes are
        checked), a message string, a `TrialResult`-like object with `.status`, or a
        dict with a `"status"` key.
    classify_exit(returncode, stderr_tail, *, timed_out=False, timeout_s=None)
        -> (status, reason) for a child process that ended without reporting a
        result. `status` is one of `STATUSES`: "ok", "oom", "timeout", "error".
"""

from __future__ import annotations

import re
import signal
from typing import Any, Literal

Status = Literal["ok", "oom", "timeout", "error"]
STATUSES: tuple[str, ...] = ("ok", "oom", "timeout", "error")

# Class names, anywhere in the exception's MRO: TF's `ResourceExhaustedError`
# (tf.errors and its Keras re-raise), Python's own, and the XLA/JAX spelling.
OOM_CLASS_NAMES = frozenset({"ResourceExhaustedError", "MemoryError", "OutOfMemoryError"})

# Lower-cased substrings of allocator and runtime messages. "failed to allocate"
# and "out of memory" come from the BFC allocator and CUDA; `std::bad_alloc` is what
# a C++ op prints before `terminate` aborts the process (SIGABRT).
OOM_PATTERNS: tuple[str, ...] = (
    "oom when allocating",
    "resourceexhaustederror",
    "resource exhausted",
    "failed to allocate",
    "cuda_error_out_of_memory",
    "out of memory",
    "std::bad_alloc",
    "memoryerror",
    "soft oom",
)

# The kernel OOM killer sends SIGKILL: Popen reports -9, a shell reports 128 + 9.
_SIGKILL_CODES = (-signal.SIGKILL, 128 + signal.SIGKILL)


def _matches(text: str) -> str | None:
    """The first line of `text` that contains an OOM pattern, or None."""
    for line in text.splitlines():
        low = line.lower()
        if any(p in low for p in OOM_PATTERNS):
            return line.strip()
    return None


def is_oom_error(obj: Any) -> bool:
    """Whether `obj` says "out of memory".

    Args:
        obj: an exception (checked by class name through its MRO, by message, and
            through `__cause__`/`__context__`), a string (an error message or a
            stderr tail), an object with a `status` attribute (a `TrialResult`), or a
            dict with a `"status"` key.

    Returns:
        True for TensorFlow's `ResourceExhaustedError`, `MemoryError`, allocator and
        CUDA out-of-memory messages, `std::bad_alloc`, and results whose status is
        `"oom"`.
    """
    if obj is None:
        return False
    if isinstance(obj, str):
        return _matches(obj) is not None
    if isinstance(obj, dict):
        return obj.get("status") == "oom"
    if isinstance(obj, BaseException):
        seen: set[int] = set()
        exc: BaseException | None = obj
        while exc is not None and id(exc) not in seen:
            seen.add(id(exc))
            if any(cls.__name__ in OOM_CLASS_NAMES for cls in type(exc).__mro__):
                return True
            if _matches(str(exc)) is not None:
                return True
            exc = exc.__cause__ or exc.__context__
        return False
    status = getattr(obj, "status", None)
    return status == "oom"


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def _last_error_line(stderr_tail: str) -> str | None:
    """The exception line after a Python traceback (`SomeError: message`), if any."""
    lines = [ln.strip() for ln in stderr_tail.splitlines() if ln.strip()]
    if not any(ln.startswith("Traceback (most recent call last)") for ln in lines):
        return None
    for ln in reversed(lines):
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b", ln):
            return ln
    return lines[-1] if lines else None


def classify_exit(
    returncode: int | None,
    stderr_tail: str,
    *,
    timed_out: bool = False,
    timeout_s: float | None = None,
) -> tuple[Status, str]:
    """Status and reason for a child process that ended without reporting a result.

    Args:
        returncode: the child's exit status as `subprocess` reports it (negative:
            killed by that signal). `None` if it never exited by itself.
        stderr_tail: the last lines of its stderr.
        timed_out: the parent killed it for exceeding its time limit.
        timeout_s: that limit, for the reason. `None`: not mentioned.

    Returns:
        `(status, reason)`: `"timeout"` when `timed_out`; `"oom"` when stderr shows an
        out-of-memory message, or the child was SIGKILLed without a Python traceback
        (the kernel OOM killer's signature); otherwise `"error"` naming the signal
        (e.g. "crashed with SIGSEGV") or the exit code and the last error line.
    """
    if timed_out:
        limit = f" of {timeout_s:g} s" if timeout_s is not None else ""
        return "timeout", f"exceeded the time limit{limit}; process group killed"
    oom_line = _matches(stderr_tail or "")
    if oom_line is not None:
        return "oom", f"out of memory: {oom_line[:300]}"
    error_line = _last_error_line(stderr_tail or "")
    if returncode in _SIGKILL_CODES and error_line is None:
        return "oom", (
            "killed by SIGKILL without a Python traceback "
            "(the kernel OOM killer's signature; check `dmesg`)"
        )
    if returncode is not None and returncode < 0:
        return "error", f"crashed with {_signal_name(-returncode)}"
    if returncode is not None and returncode > 128 and error_line is None:
        return "error", f"crashed with {_signal_name(returncode - 128)} (exit {returncode})"
    detail = f": {error_line[:300]}" if error_line else ""
    if returncode == 0:
        return "error", "exited without reporting a result" + detail
    return "error", f"exited with code {returncode}{detail}"
