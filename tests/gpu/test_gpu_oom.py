"""GPU out-of-memory forms that TensorFlow reports under other names (trainer.oom).

Message texts as users reported them (sources in trainer/oom.py's docstring).
"""

from __future__ import annotations

import pytest

from trainer.oom import classify_exit, is_oom_error


class UnknownError(Exception):
    """Stands in for tf.errors.UnknownError (matched by name, never imported)."""


class InternalError(Exception):
    """Stands in for tf.errors.InternalError."""


GPU_FORMS = [
    (
        UnknownError,
        "Failed to get convolution algorithm. This is probably because cuDNN failed to "
        "initialize, so try looking to see if a warning log message was printed above.\n"
        "\t [[node model/conv2d/Conv2D (defined at train.py:12) ]]",
    ),
    (
        UnknownError,
        "2 root error(s) found.\n  (0) Unknown: Failed to get convolution algorithm. "
        "This is probably because cuDNN failed to initialize",
    ),
    (InternalError, "Dst tensor is not initialized.\n\t [[{{node _Recv}}]]"),
    (UnknownError, "Could not create cudnn handle: CUDNN_STATUS_ALLOC_FAILED"),
    (UnknownError, "could not create cudnn handle: CUDNN_STATUS_NOT_INITIALIZED"),
    (InternalError, "failed to create cublas handle: CUBLAS_STATUS_ALLOC_FAILED"),
    (InternalError, "failed to allocate memory [Op:AddV2]"),
    (InternalError, "CUDA_ERROR_OUT_OF_MEMORY: out of memory"),
]


@pytest.mark.parametrize("cls, message", GPU_FORMS)
def test_gpu_forms_are_out_of_memory(cls, message):
    assert is_oom_error(cls(message))
    assert is_oom_error(message)


@pytest.mark.parametrize(
    "tail",
    [
        "E tensorflow/stream_executor/cuda/cuda_dnn.cc:455] could not create cudnn handle: "
        "CUDNN_STATUS_NOT_INITIALIZED\nF tensorflow/core/kernels/conv_ops.cc:713] Check failed",
        'Traceback (most recent call last):\n  File "x.py", line 1\n'
        "tensorflow.python.framework.errors_impl.InternalError: Dst tensor is not initialized.",
        'Traceback (most recent call last):\n  File "x.py", line 1\n'
        "tensorflow.python.framework.errors_impl.UnknownError: Failed to get convolution "
        "algorithm. This is probably because cuDNN failed to initialize",
    ],
)
def test_a_dead_child_with_a_gpu_form_is_out_of_memory(tail):
    status, reason = classify_exit(1 if "Traceback" in tail else -6, tail)
    assert status == "oom", reason


def test_the_allocators_not_a_failure_warning_is_not_out_of_memory():
    warning = (
        "W external/local_xla/xla/tsl/framework/bfc_allocator.cc:291] Allocator (GPU_0_bfc) "
        "ran out of memory trying to allocate 4.25GiB with freed_by_count=0. The caller "
        "indicates that this is not a failure, but this may mean that there could be "
        "performance gains if more memory were available."
    )
    assert not is_oom_error(warning)
    status, _ = classify_exit(1, warning + "\nTraceback (most recent call last):\nValueError: x")
    assert status == "error"
