"""This process's memory: peak RSS on the host, the allocator's peak on a GPU, and the
glibc settings that keep host memory from creeping over a long run.

Why the glibc settings: TensorFlow's CPU tensors come from `malloc`, from many threads.
glibc gives threads that contend for the heap arenas of their own (up to 8 per core),
and memory freed into an arena stays resident until the top of that arena is free. On a
long run the resident set at the end of each epoch then grew step by step, and the
epoch peaks with it. `limit_malloc_arenas` caps the arenas (glibc's `M_ARENA_MAX`, the
`MALLOC_ARENA_MAX` environment variable's setting) and `release_free_heap` returns free
pages of every arena to the kernel (`malloc_trim(0)`). `fix_mmap_threshold` holds the
size above which a block gets pages of its own (`mmap`) at 8 MiB (`MMAP_THRESHOLD`):
glibc otherwise raises that threshold to the size of each such block freed (up to
32 MiB), after which TensorFlow's activation-sized tensors come from the arenas and
fragment them, and how far it rose depended on the order of the first frees, so two
runs of one plan differed in their peaks. Measured with
`benchmarks/creep.py` (docs/runs.md, "Host memory over a long run"). All are no-ops
where the C library is not glibc. `configure_malloc` applies the two settings and asks
TensorFlow for its own BFC allocator for every CPU tensor (`use_tf_cpu_bfc`), which kept
one long run's peak at its first epoch's (docs/runs.md, "TensorFlow's allocator for CPU
tensors"; not every plan's).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import resource
import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_bytes(field: str) -> int | None:
    """A size from `/proc/self/status` (`VmHWM`, `VmRSS`: kB there), or `None` off Linux."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int:
    """The process's peak resident set size since start (or the last `reset_peak_rss`)."""
    peak = _status_bytes("VmHWM")
    if peak is not None:
        return peak
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def current_rss_bytes() -> int | None:
    """The process's resident set size now (Linux `VmRSS`), or `None` where unreadable."""
    return _status_bytes("VmRSS")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux: write 5 to clear_refs). True if it worked."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


# mallopt's parameter number for the arena cap (glibc malloc/malloc.h: M_ARENA_MAX -8).
_M_ARENA_MAX = -8
MALLOC_ARENAS = 2


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):  # musl and others have no mallopt/malloc_trim
        return None


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas for this process. True if the C library took it.

    Call it before TensorFlow starts its thread pools: glibc fixes its arena limit once
    eight arenas exist, so a late call changes nothing. fitplan calls it first thing in
    the command line, the trial children and `trainer.train.fit.train`/`resume`.
    """
    libc = _glibc()
    return bool(libc and libc.mallopt(_M_ARENA_MAX, arenas) == 1)


# mallopt's parameter number for the mmap threshold (glibc malloc/malloc.h: M_MMAP_THRESHOLD -3).
_M_MMAP_THRESHOLD = -3
# Held at 8 MiB: setting it turns the dynamic threshold off (mallopt(3): "Dynamic
# adjustment of the mmap threshold is disabled if any of the M_TRIM_THRESHOLD, M_TOP_PAD,
# M_MMAP_THRESHOLD, or M_MMAP_MAX parameters is set"). Not glibc's initial 128 KiB: with
# every block above 128 KiB (or 1 MiB) mapped and unmapped on its own, the epfl-em step
# took 3.3-3.6 s against 2.4-2.6 s (page faults on every tensor); at 8 MiB it stepped as
# fast as with the dynamic threshold (docs/runs.md, "Host memory over a long run").
MMAP_THRESHOLD = 8 * 2**20


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Hold glibc's mmap threshold at `threshold` bytes for this process. True if taken.

    Blocks above it are mapped on their own and unmapped when freed, so they never stay
    resident in an arena. Without it, glibc raises the threshold to the size of every
    mapped block freed (to 32 MiB on 64-bit; mallopt(3), M_MMAP_THRESHOLD), and from then
    on blocks of a few MiB, TensorFlow's activations and gradients, come from the arenas.
    Measured (docs/runs.md, "The mmap threshold"): on the demo's plan over 30 epochs the
    highest epoch peak rose 4.5% over epoch 1 against 12.2% without it, and sat 9% lower;
    on epfl-em the peak was 3-10% lower at the same step time (within a few runs' spread).
    Can be called at any time; earlier is better (blocks already in an arena stay there).
    """
    libc = _glibc()
    return bool(libc and libc.mallopt(_M_MMAP_THRESHOLD, int(threshold)) == 1)


# TensorFlow's own best-fit-with-coalescing allocator for every CPU tensor, read once when
# TensorFlow creates its CPU device (tensorflow/core/common_runtime/process_state.cc,
# `ProcessState::GetCPUAllocator`: "TF_CPU_ALLOCATOR_USE_BFC", default false). Without
# it, TensorFlow's oneDNN build gives tensors of 4 KiB and more a BFC pool of its own
# (`MklCPUAllocator`, "mklcpu"; tensorflow/core/common_runtime/mkl_cpu_allocator.h,
# `kSmallAllocationsThreshold`) and smaller ones to malloc, and the epoch peak of
# epfl-em's 4 GiB plan rose 3024 -> 3200 MiB over 9 epochs. With one BFC allocator for all
# tensors the same run peaked at 3178-3191 MiB from epoch 1 on (docs/runs.md,
# "TensorFlow's allocator for CPU tensors"). Not for every plan: an efficientnet_b0 plan
# still rose 11.6% over its verification run in 20 minutes (docs/planning.md, stop 29).
# A user's own setting of the variable wins (`false` restores TensorFlow's default).
TF_CPU_BFC_ENV = "TF_CPU_ALLOCATOR_USE_BFC"


def use_tf_cpu_bfc() -> bool:
    """Ask TensorFlow for its BFC allocator for CPU tensors (`TF_CPU_BFC_ENV`) unless the
    user set the variable. True if it is on. Only takes effect before TensorFlow creates
    its CPU device (its first operation); a later call changes nothing in this process
    (its children inherit it)."""
    value = os.environ.setdefault(TF_CPU_BFC_ENV, "true")
    return value.strip().lower() in ("1", "true")


def configure_malloc() -> bool:
    """The allocator settings fitplan trains and measures under: glibc's arena cap and
    fixed mmap threshold, and TensorFlow's BFC allocator for CPU tensors. True if the C
    library took both glibc settings. Call it first thing in a process that will train or
    measure (the command line, trial children, `train`, `resume`)."""
    use_tf_cpu_bfc()
    arenas = limit_malloc_arenas()
    return fix_mmap_threshold() and arenas


def release_free_heap() -> bool:
    """Return free heap pages of every malloc arena to the kernel (glibc `malloc_trim(0)`).

    True if memory was released. Costs milliseconds; the trainer calls it before each
    validation pass and after each epoch (`trainer.train.callbacks.ReleaseFreeHeap`).
    """
    libc = _glibc()
    return bool(libc and libc.malloc_trim(0) == 1)


def cpu_tensor_bytes(tf: object = None) -> tuple[int, int] | None:
    """Bytes of CPU tensors in use now and at peak (since start or the last
    `reset_cpu_tensor_peak`), as TensorFlow's CPU allocator counts them
    (`tf.config.experimental.get_memory_info("CPU:0")`; with `use_tf_cpu_bfc` every
    tensor, with oneDNN's default allocator only those of 4 KiB and more); `None` where
    the allocator keeps no statistics (the call raises). With `use_tf_cpu_bfc` on, the
    resident part of the allocator's pool follows this peak, and it is the part of a long
    run's resident set that rises (docs/runs.md, "Where a long run's rise comes from").
    `tf`: the module (a fake in tests).
    """
    if tf is None:
        import tensorflow as tf

    try:
        info = tf.config.experimental.get_memory_info("CPU:0")
    except (ValueError, RuntimeError):
        return None
    return int(info["current"]), int(info["peak"])


def reset_cpu_tensor_peak(tf: object = None) -> bool:
    """Restart the CPU allocator's peak (`cpu_tensor_bytes`); False where it keeps none."""
    if tf is None:
        import tensorflow as tf

    try:
        tf.config.experimental.reset_memory_stats("CPU:0")
    except (ValueError, RuntimeError):
        return False
    return True


def gpu_peak_bytes(device: str = "GPU:0") -> int | None:
    """TensorFlow allocator's peak bytes on `device`, or `None` without a GPU."""
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        return None
    return int(tf.config.experimental.get_memory_info(device)["peak"])


def reset_gpu_peak(device: str = "GPU:0", tf: object = None) -> bool:
    """Restart TensorFlow's allocator peak on `device`; False without a GPU.

    Training calls it after the first step of each `fit` (`callbacks.MemoryGuard`), the
    trial children after their warm-up steps: the first step's cuDNN autotuning takes
    scratch memory only when it is free (up to `TF_CUDNN_WORKSPACE_LIMIT_IN_MB`, 4 GiB
    by default), so counting it would make the peak depend on the room left, not on
    the need (docs/planning.md, "Measuring memory";
    https://www.tensorflow.org/api_docs/python/tf/config/experimental/reset_memory_stats).
    `tf`: the `tensorflow` module (a fake in tests); defaults to importing it.
    """
    if tf is None:
        import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        return False
    tf.config.experimental.reset_memory_stats(device)
    return True
