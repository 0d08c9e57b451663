"""OOM classification: exceptions by class name and message, child exits by code and stderr."""

from __future__ import annotations

import signal

import pytest

from planner.trials.trial import TrialResult
from trainer.oom import SOFT_OOM_EXIT_CODE, classify_exit, is_oom_error


class ResourceExhaustedError(Exception):
    """Named like tf.errors.ResourceExhaustedError; TF itself is never imported here."""


class OpError(Exception):
    pass


class SubResourceExhaustedError(ResourceExhaustedError):
    pass


@pytest.mark.parametrize(
    "obj",
    [
        MemoryError(),
        ResourceExhaustedError("anything"),
        SubResourceExhaustedError("subclass found through the MRO"),
        RuntimeError("OOM when allocating tensor with shape[8,64,256,256]"),
        RuntimeError(
            "failed to allocate 2.00GiB (2147483648 bytes) from device: CUDA_ERROR_OUT_OF_MEMORY"
        ),
        RuntimeError("CUDA error: out of memory"),
        RuntimeError("std::bad_alloc"),
        "2024 W allocator: OOM when allocating tensor",
        TrialResult("oom", 4),
        {"status": "oom"},
    ],
)
def test_is_oom_error_true(obj):
    assert is_oom_error(obj)


@pytest.mark.parametrize(
    "obj",
    [
        None,
        ValueError("Input 0 of layer is incompatible"),
        OpError("Allocation of 123 exceeds 10% of free system memory."),
        "a harmless log line",
        TrialResult("error", 4, reason="crashed with SIGSEGV"),
        TrialResult("ok", 4),
        {"status": "timeout"},
    ],
)
def test_is_oom_error_false(obj):
    assert not is_oom_error(obj)


def test_is_oom_error_follows_the_cause_chain():
    try:
        try:
            raise ResourceExhaustedError("inner")
        except ResourceExhaustedError as inner:
            raise RuntimeError("Graph execution error") from inner
    except RuntimeError as outer:
        assert is_oom_error(outer)


def test_sigkill_without_traceback_is_the_oom_killer():
    for code in (-signal.SIGKILL, 137):
        status, reason = classify_exit(code, "some TF log line\n")
        assert status == "oom"
        assert "SIGKILL" in reason and "OOM killer" in reason


def test_sigkill_is_the_oom_killer_whatever_stderr_says():
    """Only the kernel SIGKILLs a trial child (our own kill is a timeout): the code decides."""
    tail = "Traceback (most recent call last):\n  File x\nValueError: bad shape\n"
    assert classify_exit(-9, tail)[0] == "oom"
    assert classify_exit(-9, "", timed_out=True, timeout_s=5)[0] == "timeout"


def test_the_soft_limit_exit_code_is_oom_and_quotes_the_poller():
    line = "soft OOM: RSS 3.61 GiB exceeded the memory limit 3.60 GiB"
    assert classify_exit(SOFT_OOM_EXIT_CODE, line + "\n") == ("oom", line)
    assert classify_exit(SOFT_OOM_EXIT_CODE, "")[0] == "oom"


# TF's BFC allocator logs this when a caller said the allocation may fail (a smaller
# cuDNN workspace will do); the run goes on. Logs sometimes wrap it.
HARMLESS = (
    "2026-01-01 10:00:00.000000: W external/local_xla/xla/tsl/framework/bfc_allocator.cc:310] "
    "Allocator (GPU_0_bfc) ran out of memory trying to allocate 2.30GiB with "
    "freed_by_count=0. The caller indicates that this is not a failure, but this may mean "
    "that there could be performance gains if more memory were available.\n"
)
HARMLESS_WRAPPED = (
    "W tensorflow/core/common_runtime/bfc_allocator.cc:217] Ran out of memory trying to "
    "allocate 1.18GiB. \nThe caller indicates that this is not a failure, but may mean "
    "that there could be performance gains if more memory is available.\n"
)


@pytest.mark.parametrize("warning", [HARMLESS, HARMLESS_WRAPPED])
def test_the_harmless_allocator_warning_never_makes_another_failure_look_oom(warning):
    tail = (
        warning * 3
        + "Traceback (most recent call last):\n"
        + '  File "model.py", line 3, in build\n'
        + 'ValueError: Input 0 of layer "conv" is incompatible with the layer\n'
    )
    status, reason = classify_exit(1, tail)
    assert status == "error"
    assert (
        reason
        == 'exited with code 1: ValueError: Input 0 of layer "conv" is incompatible with the layer'
    )
    # Without a traceback either: a crash stays a crash, an exit code an exit code.
    assert classify_exit(-11, warning) == ("error", "crashed with SIGSEGV")
    assert classify_exit(3, warning) == ("error", "exited with code 3")
    assert not is_oom_error(warning)
    assert not is_oom_error(RuntimeError(warning))


def test_a_real_allocator_failure_next_to_the_warning_is_still_oom():
    tail = (
        HARMLESS
        + "Traceback (most recent call last):\n  File x\n"
        + "tensorflow.python.framework.errors_impl.ResourceExhaustedError: Graph execution "
        + "error: OOM when allocating tensor with shape[8,64,256,256] and type float\n"
    )
    status, reason = classify_exit(1, tail)
    assert status == "oom" and "ResourceExhaustedError: Graph execution error" in reason
    assert classify_exit(1, "Traceback (most recent call last):\n  File x\nMemoryError\n") == (
        "oom",
        "out of memory: MemoryError",
    )


def test_segfault_is_an_error_naming_the_signal():
    assert classify_exit(-11, "") == ("error", "crashed with SIGSEGV")
    assert classify_exit(139, "")[1].startswith("crashed with SIGSEGV")


def test_allocator_message_in_stderr_is_oom_whatever_the_code():
    tail = "terminate called after throwing an instance of 'std::bad_alloc'\n"
    status, reason = classify_exit(-6, tail)
    assert status == "oom" and "std::bad_alloc" in reason
    status, _ = classify_exit(1, "W tensorflow: OOM when allocating tensor with shape[4]\n")
    assert status == "oom"


def test_timeout_wins_and_names_the_limit():
    status, reason = classify_exit(-9, "", timed_out=True, timeout_s=30)
    assert status == "timeout" and "30 s" in reason


def test_python_error_exit_quotes_the_last_line():
    tail = "Traceback (most recent call last):\n  File 'x'\nKeyError: 'backbone'\n"
    status, reason = classify_exit(1, tail)
    assert status == "error"
    assert reason == "exited with code 1: KeyError: 'backbone'"


def test_clean_exit_without_result_is_an_error():
    status, reason = classify_exit(0, "")
    assert status == "error" and "without reporting a result" in reason
