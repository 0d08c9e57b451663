"""Reading this process's memory: peak RSS on the host, the allocator's peak on a GPU."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def peak_rss_bytes() -> int:
    """The process's peak resident set size since start (or the last `reset_peak_rss`)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux: write 5 to clear_refs). True if it worked."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def gpu_peak_bytes(device: str = "GPU:0") -> int | None:
    """TensorFlow allocator's peak bytes on `device`, or `None` without a GPU."""
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        return None
    return int(tf.config.experimental.get_memory_info(device)["peak"])
