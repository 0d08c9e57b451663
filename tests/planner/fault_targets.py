"""Child-side targets for trial fault tests: each misbehaves in one way, none imports TF.

Run inside `python -m planner.trials.child` through `TrialSpec(target="tests.planner.fault_targets:NAME")`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from planner.trials.trial import TrialResult


class ResourceExhaustedError(Exception):
    """Same class name as `tf.errors.ResourceExhaustedError`, without importing TF."""


def fake_measure(spec, ctx):
    """Report ok with peak a + b*mb; raise MemoryError above `ceiling` (fake memory ceiling)."""
    a, b = spec.target_args.get("a", 1000), spec.target_args.get("b", 100)
    ceiling = spec.target_args.get("ceiling")
    ctx.emit("ready", build_time_s=0.0)
    for mb in spec.micro_batches:
        ctx.start(mb)
        if ceiling is not None and mb > ceiling:
            raise MemoryError(f"fake ceiling {ceiling} < micro-batch {mb}")
        ctx.result(
            TrialResult(
                "ok", mb, peak_bytes=a + b * mb, step_time_s=0.01 * mb, trace_time_s=0.5, traces=1
            )
        )


def raise_memory_error(spec, ctx):
    ctx.start(spec.micro_batches[0])
    raise MemoryError()


def raise_resource_exhausted(spec, ctx):
    ctx.start(spec.micro_batches[0])
    raise ResourceExhaustedError(
        "OOM when allocating tensor with shape[8,64,256,256] and type float on "
        "/job:localhost/replica:0/task:0/device:CPU:0 by allocator cpu"
    )


def bad_alloc_abort(spec, ctx):
    ctx.start(spec.micro_batches[0])
    sys.stderr.write(
        "terminate called after throwing an instance of 'std::bad_alloc'\n  what():  std::bad_alloc\n"
    )
    sys.stderr.flush()
    os.abort()


def ok_then_sigkill(spec, ctx):
    """First size ok, then killed like the kernel OOM killer does (SIGKILL, no traceback)."""
    fake = spec.micro_batches[0]
    ctx.start(fake)
    ctx.result(
        TrialResult("ok", fake, peak_bytes=1000, step_time_s=0.01, trace_time_s=0.5, traces=1)
    )
    ctx.start(spec.micro_batches[1])
    os.kill(os.getpid(), signal.SIGKILL)


def segfault(spec, ctx):
    ctx.start(spec.micro_batches[0])
    os.kill(os.getpid(), signal.SIGSEGV)


def hang(spec, ctx):
    """Hang with a grandchild in the same process group; its pid goes to a file to check the kill."""
    ctx.emit("ready", build_time_s=0.0)
    ctx.start(spec.micro_batches[0])
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(spec.target_args["pid_file"], "w") as fh:
        fh.write(str(child.pid))
    time.sleep(600)


def garbage(spec, ctx):
    print("Epoch 1/1 - this is not a result line")
    print("{'peak': 12}")


def raise_value_error(spec, ctx):
    ctx.start(spec.micro_batches[0])
    raise ValueError("Input 0 of layer 'conv' is incompatible with the layer")


def grow_until_limit(spec, ctx):
    """Allocate and touch 64 MiB blocks until the soft memory limit stops the child."""
    ctx.start(spec.micro_batches[0])
    blocks = []
    for _ in range(64):  # at most 4 GiB: the limit in the test is far lower
        blocks.append(bytearray(64 * 2**20))
        blocks[-1][::4096] = b"\x01" * len(blocks[-1][::4096])
        time.sleep(0.05)
    ctx.result(TrialResult("ok", spec.micro_batches[0], peak_bytes=0))


def malformed_marker(spec, ctx):
    from planner.trials.trial import MARKER

    print(MARKER + "{not json", flush=True)
