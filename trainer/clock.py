"""The user's clock: when this process started, on the monotonic clock. No TensorFlow."""

from __future__ import annotations

import os
import time
from collections.abc import Callable


def process_start_monotonic(clock: Callable[[], float] = time.monotonic) -> float:
    """`clock()` value at which this process started (its interpreter and imports count).

    Read from the kernel's process start time (`psutil.Process().create_time()`, wall
    clock, 10 ms resolution on Linux) and moved onto the monotonic clock. Falls back to
    now when psutil cannot say.
    """
    try:
        import psutil

        age = time.time() - psutil.Process(os.getpid()).create_time()
    except Exception:  # noqa: BLE001 - psutil missing or the process table unreadable
        return clock()
    return clock() - max(0.0, age)
