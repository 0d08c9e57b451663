"""Out-of-memory classification: the one place that knows what running out of memory looks like.

Every caller asks here instead of matching messages itself (Lightning's `is_oom_error`
pattern): the trial child for an exception in a measured step, the trial parent for a
child that died without reporting, and the trainer's OOM step-down. Nothing in this
module imports TensorFlow: the parent process of a trial must never load it (TF cannot
give GPU memory back after an out-of-memory error), so exceptions are recognised by
class name and message.

What counts as out of memory, and why:

    Evidence                                                    Verdict
    the child was killed by SIGKILL (-9; 137 through a shell)   oom
        and not by our time limit: the kernel OOM killer (global or cgroup) sends
        SIGKILL and nothing else in a trial does; text printed before it cannot say
        why the kernel stepped in.
    the child exited with `SOFT_OOM_EXIT_CODE`                  oom
        our own RSS poller stopped it at the soft memory limit.
    an exception whose class, anywhere in its MRO or cause      oom
    chain, is `ResourceExhaustedError`, `MemoryError` or
    `OutOfMemoryError`
        TF raises ResourceExhaustedError when an allocation fails (sources below);
        Python raises MemoryError when malloc fails; OutOfMemoryError is the
        XLA/JAX and PyTorch spelling.
    a Python traceback ending in one of those classes or an     oom
    out-of-memory message
        the same exception, seen as text.
    a Python traceback ending in any other exception            that error
        the traceback says what failed; out-of-memory log lines above it were
        warnings.
    no traceback: "OOM when allocating", "resource exhausted",  oom
    "CUDA_ERROR_OUT_OF_MEMORY", "out of memory", "failed to
    allocate", `std::bad_alloc` (e.g. then SIGABRT)
        TF's, XLA's and CUDA's allocation-failure messages; bad_alloc is C++ `new`
        failing, after which `terminate` aborts the process.
    GPU out of memory that TensorFlow reports as another      oom
    error (UnknownError, InternalError) or only in the log:
    "Failed to get convolution algorithm. This is probably
    because cuDNN failed to initialize", "could not create
    cudnn handle: CUDNN_STATUS_ALLOC_FAILED" (or
    `CUDNN_STATUS_NOT_INITIALIZED`), `CUBLAS_STATUS_ALLOC_FAILED`,
    "Dst tensor is not initialized."
        cuDNN and cuBLAS allocate their handles and workspaces outside TF's allocator
        and fail with these when the card is full; TF then reports them as errors of
        other classes (sources below). `CUDNN_STATUS_NOT_INITIALIZED` can also mean a
        cuDNN/driver mismatch; then every size fails and the step-down ends at
        micro-batch 1 with the message quoted, which names it.
    TF's BFC warning "Allocator (...) ran out of memory trying  not oom
    to allocate X ... The caller indicates that this is not a
    failure, but this may mean that there could be performance
    gains if more memory were available."
        TF says so itself: the caller asked for memory it can do without (e.g. a
        larger cuDNN workspace), got less and went on. Removed before matching.
    "Allocation of X exceeds 10% of free system memory."        not oom
        a warning of TF's CPU allocator before an allocation that then succeeds.

Sources. `tf.errors.ResourceExhaustedError` is documented as "Raised when some resource
has been exhausted while running operation ... If running into ResourceExhaustedError
due to out of memory (OOM), try to use smaller batch size"
(https://www.tensorflow.org/api_docs/python/tf/errors/ResourceExhaustedError; defined in
tensorflow/python/framework/errors_impl.py). The same page says it may also mean a
quota or a full file system; in a training step the ops that raise it allocate tensors,
so fitplan counts it as OOM. An allocation failure in a kernel reads "OOM when
allocating tensor with shape[...]" (OpKernelContext::allocate_tensor,
tensorflow/core/framework/op_kernel.cc). The harmless warning above is logged by the BFC
allocator (xla/tsl/framework/bfc_allocator.cc, formerly
tensorflow/core/common_runtime/bfc_allocator.cc) when a caller allowed the allocation
to fail; when an allocation really fails it logs "ran out of memory trying to allocate
... requested by op ..." instead and the op raises `ResourceExhaustedError`.

GPU forms, as users reported them from TensorFlow: "UnknownError: Failed to get
convolution algorithm. This is probably because cuDNN failed to initialize, so try
looking to see if a warning log message was printed above." (tensorflow/tensorflow#24828,
#38929, #43761; answered "GPU not having enough memory ... reducing the batch size" in
Sentdex/pygta5#125); "Could not create cudnn handle: CUDNN_STATUS_ALLOC_FAILED"
(tensorflow/tensorflow#39989, #38565, #30523); "could not create cudnn handle:
CUDNN_STATUS_NOT_INITIALIZED" (logged by stream_executor/cuda/cuda_dnn.cc before the
convolution fails); "InternalError: Dst tensor is not initialized." when a host-to-GPU
copy finds no room ("really the problem is out of GPU memory", tensorflow/tensorflow#7025,
#21775); "CUDA_ERROR_OUT_OF_MEMORY" and "failed to allocate ... from device" from the
CUDA driver calls in stream_executor/cuda/cuda_driver.cc.

API:
    is_oom_error(obj) -> bool
        `obj` is an exception (its class hierarchy, message and chained causes are
        checked), a message string, a `TrialResult`-like object with `.status`, or a
        dict with a `"status"` key.
    classify_exit(returncode, stderr_tail, *, timed_out=False, timeout_s=None)
        -> (status, reason) for a child process that ended without reporting a
        result. `status` is one of `STATUSES`: "ok", "oom", "timeout", "error".
    SOFT_OOM_EXIT_CODE: the exit status of a trial child stopped by its memory poller.
"""

from __future__ import annotations

import re
import signal
from typing import Any, Literal

Status = Literal["ok", "oom", "timeout", "error"]
STATUSES: tuple[str, ...] = ("ok", "oom", "timeout", "error")

# A trial child whose RSS poller stops it at the soft memory limit exits with this code
# (after reporting the result): outside Python's own codes (1 uncaught exception, 2
# usage), sysexits.h (64-78) and the shell's 126-165 (128 + signal).
SOFT_OOM_EXIT_CODE = 99

# Class names, anywhere in the exception's MRO: TF's `ResourceExhaustedError`
# (tf.errors and its Keras re-raise), Python's own, and the XLA/JAX spelling.
OOM_CLASS_NAMES = frozenset({"ResourceExhaustedError", "MemoryError", "OutOfMemoryError"})

# Lower-cased substrings of allocator and runtime error messages. "oom when allocating"
# is TF's kernel allocation failure; "resource exhausted"/"resource_exhausted" the status
# name in TF and XLA messages; "failed to allocate" and "out of memory" come from CUDA
# and the allocators; `std::bad_alloc` is what a C++ op prints before `terminate` aborts
# the process (SIGABRT); "soft oom" is this package's own poller.
OOM_PATTERNS: tuple[str, ...] = (
    "oom when allocating",
    "resourceexhaustederror",
    "resource exhausted",
    "resource_exhausted",
    "failed to allocate",
    "cuda_error_out_of_memory",
    "out of memory",
    "std::bad_alloc",
    "memoryerror",
    "soft oom",
    # GPU forms reported under other error classes (the table above, with sources).
    "failed to get convolution algorithm",
    "cudnn failed to initialize",
    "cudnn_status_alloc_failed",
    "cudnn_status_not_initialized",
    "cublas_status_alloc_failed",
    "dst tensor is not initialized",
)

# TF's BFC allocator warning when a caller allowed the allocation to fail (the table
# above): removed before matching. Logs wrap it, so it may span a line break.
_HARMLESS = re.compile(
    r"ran out of memory trying to allocate.{0,300}?this is not a failure"
    r"(.{0,200}?more memory (were|is) available\.?)?",
    re.IGNORECASE | re.DOTALL,
)

# The kernel OOM killer sends SIGKILL: Popen reports -9, a shell reports 128 + 9.
_SIGKILL_CODES = (-signal.SIGKILL, 128 + signal.SIGKILL)

_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b")


def _matches(text: str) -> str | None:
    """The first line of `text` that contains an OOM pattern, or None.

    TF's harmless allocator warning is removed first, so it never counts.
    """
    for line in _HARMLESS.sub("", text).splitlines():
        low = line.lower()
        if any(p in low for p in OOM_PATTERNS):
            return line.strip()
    return None


def is_oom_error(obj: Any) -> bool:
    """Whether `obj` says "out of memory" (see the module's table).

    Args:
        obj: an exception (checked by class name through its MRO, by message, and
            through `__cause__`/`__context__`), a string (an error message or a
            stderr tail), an object with a `status` attribute (a `TrialResult`), or a
            dict with a `"status"` key.

    Returns:
        True for TensorFlow's `ResourceExhaustedError`, `MemoryError`, allocator and
        CUDA out-of-memory messages, `std::bad_alloc`, and results whose status is
        `"oom"`; False for TF's allocator warnings that say they are not a failure.
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
        if _EXCEPTION_LINE.match(ln):
            return ln
    return lines[-1] if lines else None


def _is_oom_exception_line(line: str) -> bool:
    """Whether a traceback's last line (`pkg.mod.SomeError: message`) is an OOM."""
    name = line.split(":", 1)[0].strip().rsplit(".", 1)[-1]
    return name in OOM_CLASS_NAMES or _matches(line) is not None


def classify_exit(
    returncode: int | None,
    stderr_tail: str,
    *,
    timed_out: bool = False,
    timeout_s: float | None = None,
) -> tuple[Status, str]:
    """Status and reason for a child process that ended without reporting a result.

    The exit status is judged before any text: it is the one thing a child cannot
    print by mistake. In order (the module's table says why):

    1. `timed_out`: `"timeout"`.
    2. SIGKILL: `"oom"`, the kernel OOM killer, whatever stderr says.
    3. `SOFT_OOM_EXIT_CODE`: `"oom"`, the child's own memory poller.
    4. Another signal (e.g. SIGABRT after `std::bad_alloc`): `"oom"` when stderr shows
       an out-of-memory message, else `"error"` naming the signal.
    5. An exit with a Python traceback: its last exception decides, `"oom"` or
       `"error"` quoting it; log lines above it do not.
    6. Otherwise `"oom"` when stderr shows an out-of-memory message, else `"error"`
       with the exit code.

    Args:
        returncode: the child's exit status as `subprocess` reports it (negative:
            killed by that signal). `None` if it never exited by itself.
        stderr_tail: the last lines of its stderr.
        timed_out: the parent killed it for exceeding its time limit.
        timeout_s: that limit, for the reason. `None`: not mentioned.

    Returns:
        `(status, reason)`; the reason quotes the deciding line where there is one.
    """
    text = stderr_tail or ""
    if timed_out:
        limit = f" of {timeout_s:g} s" if timeout_s is not None else ""
        return "timeout", f"exceeded the time limit{limit}; process group killed"
    if returncode in _SIGKILL_CODES:
        return "oom", "killed by SIGKILL (the kernel OOM killer's signature; check `dmesg`)"
    if returncode == SOFT_OOM_EXIT_CODE:
        line = _matches(text)
        return "oom", line[:300] if line else "stopped at the soft memory limit"
    error_line = _last_error_line(text)
    signum: int | None = None
    if returncode is not None and returncode < 0:
        signum = -returncode
    elif returncode is not None and returncode > 128 and error_line is None:
        signum = returncode - 128  # a shell in between reports 128 + signal
    if error_line is not None and signum is None:
        detail = f": {error_line[:300]}"
        if _is_oom_exception_line(error_line):
            return "oom", "out of memory" + detail
        if returncode == 0:
            return "error", "exited without reporting a result" + detail
        return "error", f"exited with code {returncode}{detail}"
    oom_line = _matches(text)
    if oom_line is not None:
        return "oom", f"out of memory: {oom_line[:300]}"
    if signum is not None:
        exit_code = f" (exit {returncode})" if returncode is not None and returncode > 0 else ""
        return "error", f"crashed with {_signal_name(signum)}{exit_code}"
    if returncode == 0:
        return "error", "exited without reporting a result"
    return "error", f"exited with code {returncode}"
