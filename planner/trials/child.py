"""The child side of a trial: `main` reads a spec on stdin (`python -m planner.trials.child`).

Everything here runs in the child process that `planner.trials.trial.run_trial` starts. It
prints one JSON event per line on stdout behind `planner.trials.trial.MARKER`:
`{"event": "ready"}` once the model is built, `{"event": "start", "micro_batch": m}`
before each size and `{"event": "result", "result": {...}}` after it. An exception in
the target becomes an `oom` or `error` result for the size in progress (classified by
`trainer.oom.is_oom_error`); then the child exits at once with `os._exit`, skipping
TensorFlow's slow and sometimes crashing teardown.

Memory on CPU is the peak RSS of each size alone: writing "5" to `/proc/self/clear_refs`
resets the kernel's high-water mark `VmHWM` to the current RSS before each size (works
on Linux for one's own process). Where that is refused, a thread polling RSS every
10 ms gives the peak instead (it can miss a short spike); `details.peak_source` says
which. The same thread enforces the soft memory limit. On GPU the TF allocator's peak
(reset per size) is the figure, with NVML's view of the process alongside.
"""

from __future__ import annotations

import importlib
import json
import os
import statistics
import sys
import threading
import time
import traceback
from typing import Any

from planner.trials.spec import DEFAULT_TARGET, MARKER, PRELOAD_ENV, TrialResult, TrialSpec
from trainer.oom import SOFT_OOM_EXIT_CODE, is_oom_error
from trainer.train.device import configure_gpus, nvml_query, process_uuids
from trainer.train.memory import configure_malloc, peak_rss_bytes, reset_peak_rss
from trainer.units import gib

_POLL_S = 0.01
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * _PAGE


class ChildContext:
    """What a target gets: reporting, the host-memory peak, and the soft limit."""

    def __init__(self, spec: TrialSpec, memory_limit_bytes: int | None):
        self.spec = spec
        self.memory_limit_bytes = memory_limit_bytes
        self.current: int | None = None
        self._lock = threading.Lock()
        self._poll_peak = 0
        self._clear_refs_ok = reset_peak_rss()
        threading.Thread(target=self._watch, daemon=True).start()

    def emit(self, event: str, **data: Any) -> None:
        line = MARKER + json.dumps({"event": event, **data}) + "\n"
        with self._lock:
            sys.stdout.write(line)
            sys.stdout.flush()

    def start(self, micro_batch: int) -> None:
        self.current = micro_batch
        self.emit("start", micro_batch=micro_batch)

    def result(self, result: TrialResult) -> None:
        self.emit("result", result=result.to_dict())

    def reset_peak(self) -> None:
        """Start a new host-memory peak (before each micro-batch size)."""
        if self._clear_refs_ok:
            self._clear_refs_ok = reset_peak_rss()
        self._poll_peak = _rss_bytes()

    def host_peak(self) -> dict[str, Any]:
        """The host peak since `reset_peak`, with both figures and which one counts."""
        poll = max(self._poll_peak, _rss_bytes())
        hwm = peak_rss_bytes() if self._clear_refs_ok else None
        return {
            "peak_bytes": hwm if hwm is not None else poll,
            "peak_source": "vmhwm" if hwm is not None else "rss_poll",
            "vmhwm_bytes": hwm,
            "rss_poll_peak_bytes": poll,
        }

    def _watch(self) -> None:
        limit = self.memory_limit_bytes if self.spec.device == "cpu" else None
        while True:
            rss = _rss_bytes()
            if rss > self._poll_peak:
                self._poll_peak = rss
            if limit is not None and rss > limit:
                self._soft_oom(rss, limit)
            time.sleep(_POLL_S)

    def _soft_oom(self, rss: int, limit: int) -> None:
        # Stop before the kernel OOM killer would: on CPU it may pick another process.
        # The exit code says so too, should the result line be lost (trainer.oom).
        mb = self.current if self.current is not None else self.spec.micro_batches[0]
        reason = f"soft OOM: RSS {gib(rss)} exceeded the memory limit {gib(limit)}"
        self.result(
            TrialResult(
                status="oom",
                micro_batch=mb,
                peak_bytes=rss,
                reason=reason,
                details={"peak_source": "rss_poll", "soft_limit_bytes": limit},
            )
        )
        sys.stderr.write(reason + "\n")
        sys.stderr.flush()
        os._exit(SOFT_OOM_EXIT_CODE)


def _load_target(name: str) -> Any:
    module, _, func = name.partition(":")
    return getattr(importlib.import_module(module), func)


def measure(spec: TrialSpec, ctx: ChildContext) -> None:
    """The real measurement: the trainer's compiled model, `train_on_batch`, per size."""
    t0 = time.perf_counter()
    import numpy as np
    import tensorflow as tf

    gpu = configure_gpu(tf, spec, ctx.memory_limit_bytes)
    import keras

    from trainer.train.fit import build_model_for_plan

    keras.mixed_precision.set_global_policy(spec.precision)
    model = build_model_for_plan(spec.to_plan(), spec.num_classes)
    keras.mixed_precision.set_global_policy(spec.precision)  # in case the builder cleared it
    traces = [0]
    inner = model.train_step

    def counted_train_step(data: Any) -> Any:
        traces[0] += 1  # Python runs only while tf.function traces: this counts traces
        return inner(data)

    model.train_step = counted_train_step
    build_s = time.perf_counter() - t0
    ctx.emit("ready", build_time_s=round(build_s, 3), device=spec.device)
    rng = np.random.default_rng(spec.seed)
    h, w = spec.input_size
    for mb in spec.micro_batches:
        ctx.start(mb)
        x = rng.random((mb, h, w, 3), dtype=np.float32)
        y = rng.integers(0, spec.num_classes, size=(mb, h, w, 1)).astype(np.float32)
        before = traces[0]
        ctx.reset_peak()
        times = run_steps(
            lambda: model.train_on_batch(x, y),  # noqa: B023 - runs before x, y change
            spec,
            (lambda: tf.config.experimental.reset_memory_stats("GPU:0")) if gpu else None,
        )
        host = ctx.host_peak()
        details: dict[str, Any] = {**host, "build_time_s": round(build_s, 3)}
        peak = host["peak_bytes"]
        if gpu:
            peak = int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
            details.update(
                peak_source="tf_allocator", tf_peak_bytes=peak, host_peak_bytes=host["peak_bytes"]
            )
            details["nvml_process_bytes"] = _nvml_process_bytes()
        ctx.result(
            TrialResult(
                status="ok",
                micro_batch=mb,
                peak_bytes=int(peak),
                step_time_s=statistics.median(times[spec.warmup_steps :]),
                trace_time_s=times[0],
                traces=traces[0] - before,
                details=details,
            )
        )


def run_steps(step: Any, spec: TrialSpec, reset_gpu_peak: Any | None) -> list[float]:
    """`spec.warmup_steps + spec.measured_steps` calls of `step`; their times in seconds.

    `reset_gpu_peak` (GPU only) runs after the warm-up: the first step's cuDNN
    autotuning takes scratch memory only when it is free (up to
    `TF_CUDNN_WORKSPACE_LIMIT_IN_MB`), so counting it would make the peak depend on
    the room left, not on the need (docs/planning.md, "Measuring memory"). Training
    does the same after its first step (`trainer.train.memory.reset_gpu_peak`).
    """
    times = []
    for i in range(spec.warmup_steps + spec.measured_steps):
        if reset_gpu_peak is not None and i == spec.warmup_steps:
            reset_gpu_peak()
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return times


def configure_gpu(tf: Any, spec: TrialSpec, memory_limit_bytes: int | None) -> bool:
    """On GPU: the plan's memory limit (or memory growth without one), as training sets it.

    The parent pins the child to the planned GPU (`CUDA_VISIBLE_DEVICES` = its UUID,
    `planner.make_plan`), so TensorFlow's `GPU:0` is that GPU.
    """
    if spec.device != "gpu":
        return False
    if not configure_gpus(tf, memory_limit_bytes):
        raise RuntimeError("trial asked for device 'gpu' but TensorFlow sees no GPU")
    return True


def _nvml_process_bytes(nvml: Any | None = None) -> int | None:
    """GPU memory NVML attributes to this process on its own GPU (found by UUID), or None."""
    uuids = process_uuids(nvml)
    if not uuids:
        return None

    def mine(lib: Any, handle: Any) -> int | None:
        for p in lib.nvmlDeviceGetComputeRunningProcesses(handle):
            if p.pid == os.getpid() and p.usedGpuMemory is not None:
                return int(p.usedGpuMemory)
        return None

    return nvml_query(uuids[0], mine, nvml)


def main() -> None:
    configure_malloc()  # allocate as training does (trainer.train.memory)
    for name in filter(None, os.environ.get(PRELOAD_ENV, "").split(",")):
        importlib.import_module(name)  # a spare (planner.trials.spare): import, then wait
    raw = sys.stdin.read()
    if not raw.strip():  # a spare no one took: its parent closed the pipe
        os._exit(0)
    payload = json.loads(raw)
    spec = TrialSpec.from_dict(payload["spec"])
    ctx = ChildContext(spec, payload.get("memory_limit_bytes"))
    try:
        _load_target(spec.target or DEFAULT_TARGET)(spec, ctx)
    except BaseException as exc:  # noqa: BLE001 - everything becomes a result for the parent
        traceback.print_exc()
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        what = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        mb = ctx.current if ctx.current is not None else spec.micro_batches[0]
        where = f"at micro-batch {mb}" if ctx.current is not None else "before the first step"
        host = ctx.host_peak()
        ctx.result(
            TrialResult(
                status="oom" if is_oom_error(exc) else "error",
                micro_batch=mb,
                peak_bytes=host["peak_bytes"],
                reason=f"{what}; {where}",
                details=host,
            )
        )
    ctx.emit("done")
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
