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
from pathlib import Path

from trainer.errors import FitplanWarning
from trainer.plan import Plan
from trainer.train.cgroup import effective_memory, read_cgroup

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
) -> int | None:
    """Memory a run could use here now: free GPU memory (first visible GPU) or available RAM.

    Available RAM obeys a container's memory limit: min(available RAM, cgroup limit -
    usage), the figure the planner's probe budgets from (`trainer.train.cgroup`).

    Args:
        device: the plan's `target.device`, `"gpu"` or `"cpu"`.
        cgroup_root: where the cgroup file systems are mounted.
        proc_self_cgroup: the file naming this process's cgroups.

    Returns:
        Bytes, or `None` when they cannot be read (no NVML for a GPU plan).
    """
    if device == "gpu":
        try:
            import pynvml

            pynvml.nvmlInit()
            try:
                handle = pynvml.nvmlDeviceGetHandleByIndex(0)
                return int(pynvml.nvmlDeviceGetMemoryInfo(handle).free)
            finally:
                pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001 - no driver, no GPU: nothing to compare with
            return None
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


def plan_warnings(plan: Plan) -> list[str]:
    """Every way `plan` was made for other data or a larger machine than this one."""
    return [m for m in (fingerprint_warning(plan), budget_warning(plan)) if m]


def warn_plan_mismatch(plan: Plan) -> None:
    """Issue `plan_warnings` as `FitplanWarning`s (the CLI prints each as one line)."""
    for message in plan_warnings(plan):
        warnings.warn(message, FitplanWarning, stacklevel=2)


__all__ = [
    "available_memory_bytes",
    "budget_warning",
    "fingerprint_warning",
    "plan_warnings",
    "warn_plan_mismatch",
]
