"""Before training: was this plan made for this data and this machine?

A plan records what it was made for: the dataset's digest (`data.fingerprint`)
and the memory budget (`target.budget_bytes`). Neither mismatch stops a run, so
both are warnings (`FitplanWarning`) that carry both values:

- Other data: the plan's choices (input size, micro-batch, memory) depend on the
  model and the image sizes, not on which files there are; refusing would make a
  user who fixed the one corrupt file the scan named re-plan for nothing. The
  predicted epoch time and the validation split may be off, so say so.
- Less memory than planned for: the run may still fit (the budget keeps headroom),
  and if a step runs out of memory the trainer steps the micro-batch down; a
  warning up front tells the user why, and that `fitplan plan` here would do better.

Kept out of `planner` on purpose: the trainer must not import it (DESIGN.md).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.errors import FitplanWarning
from trainer.plan import Plan
from trainer.train.cgroup import effective_memory, read_cgroup
from trainer.train.device import (
    CUDA_CONTEXT_BYTES,
    configure_gpus,
    memory_limit_mib,
    nvml_memory,
    pin_for_plan,
    process_uuids,
)

_GIB = 2**30


def fingerprint_warning(plan: Plan) -> str | None:
    """A message when `plan.data.fingerprint` differs from the digest of `plan.data.path`.

    Reads every dataset file once (the digest hashes contents); skipped when the
    plan records no fingerprint.
    """
    expected = plan.data.fingerprint
    if not expected:
        return None
    from trainer.data.digest import dataset_digest

    actual = dataset_digest(plan.data.path, plan.data.images, plan.data.masks)
    if actual == expected:
        return None
    return (
        f"{plan.data.path}: the data is not what the plan was made for: "
        f"plan.data.fingerprint={expected} but the data's digest is {actual}; training goes "
        "on, but the predicted epoch time may be off (`fitplan scan` shows what is there now)"
    )


def available_memory_bytes(
    device: str,
    *,
    cgroup_root: Path = Path("/sys/fs/cgroup"),
    proc_self_cgroup: Path = Path("/proc/self/cgroup"),
    nvml: Any | None = None,
) -> int | None:
    """Memory a run could use here now: free memory of this process's GPU, or available RAM.

    The GPU is the one CUDA shows this process first (TensorFlow's `GPU:0`), found in
    NVML by UUID (`trainer.train.device`): NVML index 0 is another GPU when
    `CUDA_VISIBLE_DEVICES` is set or CUDA orders the GPUs differently. Available RAM
    obeys a container's memory limit: min(available RAM, cgroup limit - usage), the
    figure the planner's probe budgets from (`trainer.train.cgroup`).

    Args:
        device: the plan's `target.device`, `"gpu"` or `"cpu"`.
        cgroup_root: where the cgroup file systems are mounted.
        proc_self_cgroup: the file naming this process's cgroups.
        nvml: a `pynvml`-like module. Defaults to `None`: `pynvml`.

    Returns:
        Bytes, or `None` when they cannot be read (no NVML for a GPU plan).
    """
    if device == "gpu":
        uuids = process_uuids(nvml)
        mem = nvml_memory(uuids[0], nvml) if uuids else None
        return None if mem is None else mem["free"]
    import psutil

    # psutil reads /proc/meminfo, which ignores a container's limit: the cgroup caps it.
    available = int(psutil.virtual_memory().available)
    return effective_memory(available, read_cgroup(cgroup_root, proc_self_cgroup))


def budget_warning(plan: Plan, available: int | None = None) -> str | None:
    """A message when the plan's memory budget exceeds what this machine has now.

    Args:
        plan: the plan; nothing to say when `target.budget_bytes` is unset.
        available: bytes available now. `None` (default): read them
            (`available_memory_bytes`).
    """
    budget = plan.target.budget_bytes
    if budget is None:
        return None
    device = plan.target.device
    if available is None:
        available = available_memory_bytes(device)
        if available is None:
            return None
    if budget <= available:
        return None
    what = "free GPU memory" if device == "gpu" else "available RAM"
    return (
        f"the plan was made for a memory budget of {budget} bytes ({budget / _GIB:.2f} GiB) but "
        f"this machine has {available} bytes ({available / _GIB:.2f} GiB) of {what} now; "
        "training goes on and steps the micro-batch down if it runs out of memory "
        "(`fitplan plan` here makes a plan that fits)"
    )


def plan_warnings(plan: Plan, gpu: GpuSetup | None = None) -> list[str]:
    """Every way `plan` was made for other data or a larger machine than this one.

    Args:
        plan: the plan.
        gpu: what `prepare_device` found; a GPU plan's budget is compared with the
            free memory it read before TensorFlow mapped the device (afterwards the
            run's own allocation would count as taken).
    """
    if plan.target.device == "gpu" and gpu is not None:
        budget = budget_warning(plan, gpu.free_bytes) if gpu.free_bytes is not None else None
    else:
        budget = budget_warning(plan)
    return [m for m in (fingerprint_warning(plan), budget, *(gpu.warnings if gpu else ())) if m]


def warn_plan_mismatch(plan: Plan, gpu: GpuSetup | None = None) -> None:
    """Issue `plan_warnings` as `FitplanWarning`s (the CLI prints each as one line)."""
    for message in plan_warnings(plan, gpu):
        warnings.warn(message, FitplanWarning, stacklevel=2)


@dataclass
class GpuSetup:
    """What `prepare_device` did: the GPUs' UUIDs, free bytes before TF, the limit set."""

    uuids: list[str] | None = None
    free_bytes: int | None = None
    memory_limit_bytes: int | None = None
    warnings: list[str] = field(default_factory=list)


def prepare_device(plan: Plan, *, nvml: Any | None = None, tf: Any | None = None) -> GpuSetup:
    """Before TensorFlow maps a GPU: pin the plan's GPU, read its free memory, set the limit.

    1. Pin (`trainer.train.device.pin_for_plan`): `CUDA_VISIBLE_DEVICES` = the plan's
       GPU UUIDs, unless TensorFlow has already initialised its devices in this process
       (then changing the variable does nothing; the planner's `train --auto` pinned
       the same GPU already) or the user's variable hides that GPU (a warning).
    2. Free memory by NVML, for the GPU this process will use, before TensorFlow takes
       any of it.
    3. The same GPU configuration as the trial children (`configure_gpus`): a logical
       device limited to the plan's budget (or to what is free, if less), so another
       job can share the card and the run is held to what was planned. A plan without
       a budget grows memory on demand.

    Args:
        plan: the plan.
        nvml: a `pynvml`-like module. Defaults to `None`: `pynvml`.
        tf: the `tensorflow` module (a fake in tests). Defaults to importing it.

    Returns:
        A `GpuSetup`; its warnings go out with `warn_plan_mismatch`.
    """
    setup = GpuSetup()
    if tf is None:
        import tensorflow as tf
    if not _devices_initialised(tf):
        note = pin_for_plan(plan, nvml=nvml)
        if note:
            setup.warnings.append(note)
    setup.uuids = process_uuids(nvml)
    if setup.uuids:
        mem = nvml_memory(setup.uuids[0], nvml)
        setup.free_bytes = None if mem is None else mem["free"]
    gpus = tf.config.list_physical_devices("GPU")
    if plan.target.device == "gpu" and not gpus:
        setup.warnings.append(
            f"the plan was made for a GPU ({plan.target.device_name or 'unnamed'}) but "
            "TensorFlow sees none here; training runs on the CPU, far slower"
        )
    if not gpus:
        return setup
    budget = plan.target.budget_bytes if plan.target.device == "gpu" else None
    if budget is not None:
        mib = memory_limit_mib(budget, setup.free_bytes, CUDA_CONTEXT_BYTES)
        setup.memory_limit_bytes = mib * 2**20
    try:
        configure_gpus(tf, setup.memory_limit_bytes)
    except RuntimeError as exc:  # devices already initialised: TF refuses; say so
        setup.warnings.append(f"the GPU memory limit could not be set ({exc})")
        setup.memory_limit_bytes = None
    return setup


def _devices_initialised(tf: Any) -> bool:
    """Whether TensorFlow has listed its physical devices (then CUDA has read the env).

    Reads the eager context's private `_physical_devices` (None until the first
    listing; TF 2.21 `tensorflow/python/eager/context.py`); unknown counts as
    initialised. A fake `tf` (tests) says so with `devices_initialised`.
    """
    if getattr(tf, "__name__", "") != "tensorflow":
        return bool(getattr(tf, "devices_initialised", False))
    try:
        from tensorflow.python.eager import context
    except ImportError:
        return True
    return getattr(context.context(), "_physical_devices", True) is not None
