"""NVIDIA GPUs through NVML (the `pynvml` module of NVIDIA's `nvidia-ml-py` package).

NVML answers without creating a CUDA context, so probing costs no GPU memory and
sees what other processes hold. No NVML library, no driver or no GPU is not an
error: the report says why and fitplan plans for the CPU.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from trainer.train.device import PIN_ORDER, mig_devices, visible_uuids


def probe_gpus(nvml: Any | None = None) -> tuple[list[dict], dict]:
    """List the NVIDIA GPUs and their memory.

    Args:
        nvml: a module-like object with the `pynvml` functions used here and an
            `NVMLError` class. Defaults to `None`: import `pynvml`.

    Returns:
        `(gpus, status)`: one dict per GPU (NVML index order) and
        `{"available": bool, "reason": str | None}`.
    """
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError as exc:
            return [], _status(False, f"pynvml is not installed ({exc}); pip install nvidia-ml-py")
    try:
        nvml.nvmlInit()
    except (nvml.NVMLError, OSError) as exc:
        return [], _status(False, f"NVML could not start: {_message(exc)}")
    try:
        driver = _decode(_call(nvml, nvml.nvmlSystemGetDriverVersion))
        cuda = _cuda_version(_call(nvml, nvml.nvmlSystemGetCudaDriverVersion))
        count = nvml.nvmlDeviceGetCount()
        gpus = [_device(nvml, i, driver, cuda) for i in range(count)]
    except nvml.NVMLError as exc:
        return [], _status(False, f"NVML failed while listing GPUs: {_message(exc)}")
    finally:
        with contextlib.suppress(nvml.NVMLError, OSError):
            nvml.nvmlShutdown()
    return gpus, _status(True, None if gpus else "NVML found no NVIDIA GPU")


def _device(nvml: Any, index: int, driver: str | None, cuda: str | None) -> dict:
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
    except nvml.NVMLError as exc:
        # A lost GPU or one this user may not query is listed, but no budget can use it.
        return {"index": index, "error": _message(exc), "memory_free_bytes": None}
    mem = _call(nvml, nvml.nvmlDeviceGetMemoryInfo, handle)
    cc = _call(nvml, nvml.nvmlDeviceGetCudaComputeCapability, handle)
    procs = _call(nvml, nvml.nvmlDeviceGetComputeRunningProcesses, handle)
    others = None
    if procs is not None:
        # usedGpuMemory is None where the driver hides it (no permission, some vGPUs).
        own = os.getpid()
        others = [p for p in procs if p.pid != own and p.usedGpuMemory is not None]
    return {
        "index": index,
        "name": _decode(_call(nvml, nvml.nvmlDeviceGetName, handle)),
        "uuid": _decode(_call(nvml, nvml.nvmlDeviceGetUUID, handle)),
        "memory_total_bytes": None if mem is None else int(mem.total),
        "memory_free_bytes": None if mem is None else int(mem.free),
        "memory_used_bytes": None if mem is None else int(mem.used),
        "driver_version": driver,
        "cuda_driver_version": cuda,
        "compute_capability": None if cc is None else f"{cc[0]}.{cc[1]}",
        "other_processes_bytes": None if others is None else sum(p.usedGpuMemory for p in others),
        "other_processes": None
        if others is None
        else [{"pid": int(p.pid), "used_bytes": int(p.usedGpuMemory)} for p in others],
        # With MIG on, CUDA sees these instances instead of the GPU (docs/gpu.md).
        "mig_devices": [
            {k: v for k, v in m.items() if k != "handle"} for m in mig_devices(nvml, handle)
        ],
    }


def visible_indices(gpus: list[dict], cuda_visible_devices: str | None) -> list[int] | None:
    """The NVML indices CUDA (and so TensorFlow) will see, in CUDA's order.

    Follows CUDA's rules (`trainer.train.device.visible_uuids`, indices read in PCI bus
    order): unset means all; entries are indices, `GPU-` UUID prefixes or `MIG-` UUIDs;
    the list stops at the first entry naming no device (so `-1` or an empty string hides
    every GPU). A MIG instance counts as its GPU's index.

    Args:
        gpus: the GPU dicts from `probe_gpus`.
        cuda_visible_devices: the variable's value; `None` when unset.

    Returns:
        The visible NVML indices, or `None` when an entry cannot be mapped (a MIG UUID
        NVML did not list): then treat every GPU as visible.
    """
    env = {"CUDA_DEVICE_ORDER": PIN_ORDER}
    if cuda_visible_devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = cuda_visible_devices
    keys = [g.get("uuid") or f"#{g['index']}" for g in gpus]
    devices = [
        {"uuid": k, "mig": g.get("mig_devices") or []} for k, g in zip(keys, gpus, strict=True)
    ]
    owner = {k: g["index"] for k, g in zip(keys, gpus, strict=True)}
    owner.update({m["uuid"]: g["index"] for g in gpus for m in g.get("mig_devices") or []})
    uuids = visible_uuids(devices, env) or []
    if any(u not in owner for u in uuids):
        return None
    return list(dict.fromkeys(owner[u] for u in uuids))


def compute_capability(gpu: dict) -> tuple[int, int] | None:
    """`(major, minor)` from a GPU dict's `"8.6"` string, or `None`."""
    text = gpu.get("compute_capability")
    if not text:
        return None
    major, _, minor = str(text).partition(".")
    return int(major), int(minor or 0)


def _call(nvml: Any, fn: Any, *args: Any) -> Any:
    # One unsupported query (NVML_ERROR_NOT_SUPPORTED on some boards) must not hide the GPU.
    try:
        return fn(*args)
    except nvml.NVMLError:
        return None


def _cuda_version(value: int | None) -> str | None:
    # NVML encodes CUDA 12.4 as 12040.
    return None if value is None else f"{value // 1000}.{value % 1000 // 10}"


def _decode(value: Any) -> Any:
    # Older pynvml releases return bytes for names and versions.
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _message(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _status(available: bool, reason: str | None) -> dict:
    return {"available": available, "reason": reason}
