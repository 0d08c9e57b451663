"""OOM classification: exceptions by class name and message, child exits by code and stderr."""

from __future__ import annotations

import signal

import pytest

from planner.trials.trial import TrialResult
from trainer.oom import classify_exit, is_oom_error


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


def test_sigkill_after_a_traceback_is_an_error():
    tail = "Traceback (most recent call last):\n  File x\nValueError: bad shape\n"
    status, reason = classify_exit(-9, tail)
    assert status == "error"


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
