"""Which GPU a process uses, pinned by UUID, and the memory it may take there.

The planner chooses one GPU (or several for a data-parallel plan) by NVML and records
their UUIDs in the plan (`target.device_uuids`). Every process that measures or trains
for that plan then sees exactly those devices: `pin_env` gives
`CUDA_DEVICE_ORDER=PCI_BUS_ID` and `CUDA_VISIBLE_DEVICES=<UUID,...>` (CUDA accepts
UUIDs there, and the bus order makes indices mean what `nvidia-smi` shows:
https://docs.nvidia.com/cuda/cuda-c-programming-guide/index.html#env-vars). TensorFlow's
`GPU:0` is then the planned device, and TensorFlow maps no other GPU at start-up.

NVML numbers GPUs in PCI bus order, CUDA (by default) fastest first, and a user's
`CUDA_VISIBLE_DEVICES` renumbers them, so "NVML index 0" is not "CUDA device 0" in
general. `visible_uuids` maps the variable to UUIDs; everything that asks NVML about
"this process's GPU" goes by that UUID (`nvml_memory`). MIG: with MIG on, CUDA sees MIG
instances (`MIG-...` UUIDs), not the parent GPU, and a process uses one of them.

Nothing here imports TensorFlow at module level: the planner's parent process uses it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

PIN_ORDER = "PCI_BUS_ID"
_MIB = 2**20

# A CUDA 12 context with lazy module loading; it is created before TensorFlow asks
# the driver for free memory, so it comes off NVML's free figure first. An estimate
# from public reports (300-600 MiB on A100/H100), not measured on this project's
# machines; the planner's verification run on the GPU catches a larger one.
CUDA_CONTEXT_BYTES = 512 * _MIB


def precision_for_capability(cc: tuple[int, int] | None) -> str:
    """The Keras mixed-precision policy for a GPU of compute capability `cc`.

    >= 8.0 (Ampere and later): `mixed_bfloat16` (bfloat16 tensor cores, float32's
    range: no loss scaling). 7.x (Volta, Turing): `mixed_float16`, which Keras trains
    with a `LossScaleOptimizer` (https://keras.io/api/mixed_precision/policy/). Below
    7.0 (Pascal and older: no tensor cores; float16 arithmetic runs at 1/64 rate on
    GeForce Pascal) or unknown: `float32`.
    """
    if cc is None:
        return "float32"
    if tuple(cc) >= (8, 0):
        return "mixed_bfloat16"
    if tuple(cc) >= (7, 0):
        return "mixed_float16"
    return "float32"


def pin_env(uuids: Sequence[str]) -> dict[str, str]:
    """The environment that makes CUDA show exactly `uuids`, in that order."""
    return {"CUDA_DEVICE_ORDER": PIN_ORDER, "CUDA_VISIBLE_DEVICES": ",".join(uuids)}


def _decode(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def mig_devices(nvml: Any, handle: Any) -> list[dict[str, Any]]:
    """The MIG instances of one GPU (empty when MIG is off or NVML cannot say).

    Uses NVML's `nvmlDeviceGetMigMode`, `nvmlDeviceGetMaxMigDeviceCount` and
    `nvmlDeviceGetMigDeviceHandleByIndex` (empty slots raise `NVMLError`).
    """
    try:
        current = nvml.nvmlDeviceGetMigMode(handle)[0]
    except (nvml.NVMLError, AttributeError):
        return []
    if not current:
        return []
    out = []
    with contextlib.suppress(nvml.NVMLError):
        for i in range(int(nvml.nvmlDeviceGetMaxMigDeviceCount(handle))):
            try:
                mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, i)
            except nvml.NVMLError:
                continue
            mem = nvml.nvmlDeviceGetMemoryInfo(mig)
            out.append(
                {
                    "uuid": _decode(nvml.nvmlDeviceGetUUID(mig)),
                    "memory_total_bytes": int(mem.total),
                    "memory_free_bytes": int(mem.free),
                    "handle": mig,
                }
            )
    return out


def inventory(nvml: Any) -> list[dict[str, Any]]:
    """Every GPU in NVML (= PCI bus) order: `{"index", "uuid", "handle", "mig"}`.

    `nvml` must be initialised by the caller.
    """
    out = []
    for i in range(int(nvml.nvmlDeviceGetCount())):
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            uuid = _decode(nvml.nvmlDeviceGetUUID(handle))
        except nvml.NVMLError:
            uuid, handle = None, None
        mig = mig_devices(nvml, handle) if handle is not None else []
        out.append({"index": i, "uuid": uuid, "handle": handle, "mig": mig})
    return out


def visible_uuids(devices: Sequence[Mapping[str, Any]], env: Mapping[str, str]) -> list[str] | None:
    """The UUIDs CUDA shows this process, in CUDA's order (CUDA device k = item k).

    Follows CUDA's rules for `CUDA_VISIBLE_DEVICES`: unset means all; entries are
    indices, `GPU-` UUID prefixes or `MIG-` UUIDs; the list stops at the first entry
    naming no device (so `-1` hides every GPU). A GPU with MIG on shows as its MIG
    instances.

    Args:
        devices: `inventory(nvml)`, or dicts with `"uuid"` and `"mig"` in NVML order.
        env: the environment (`CUDA_VISIBLE_DEVICES`, `CUDA_DEVICE_ORDER`).

    Returns:
        UUIDs, or `None` when the order cannot be known: indices (or no variable)
        with several GPUs and `CUDA_DEVICE_ORDER` other than `PCI_BUS_ID` (CUDA's
        default, fastest first, is not NVML's order).
    """
    value = env.get("CUDA_VISIBLE_DEVICES")
    bus_order = env.get("CUDA_DEVICE_ORDER") == PIN_ORDER or len(devices) <= 1

    def expand(d: Mapping[str, Any]) -> list[str]:
        return [m["uuid"] for m in d.get("mig") or []] or [d["uuid"]]

    if value is None:
        return [u for d in devices for u in expand(d)] if bus_order else None
    out: list[str] = []
    for token in (t.strip() for t in value.split(",")):
        if token.lstrip("-").isdigit():
            index = int(token)
            if not 0 <= index < len(devices):
                break
            if not bus_order:
                return None
            out.extend(expand(devices[index]))
        elif token.startswith("GPU-"):
            match = [d for d in devices if (d.get("uuid") or "").startswith(token)]
            if len(match) != 1:
                break
            out.extend(expand(match[0]))
        elif token.startswith("MIG-"):
            migs = [m["uuid"] for d in devices for m in d.get("mig") or []]
            match = [u for u in migs if u.startswith(token)]
            if migs and len(match) != 1:
                break
            out.append(match[0] if match else token)
        else:
            break
    return list(dict.fromkeys(out))


def _find(devices: Sequence[Mapping[str, Any]], uuid: str) -> Any | None:
    for d in devices:
        if d.get("uuid") == uuid:
            return d["handle"]
        for m in d.get("mig") or []:
            if m["uuid"] == uuid:
                return m["handle"]
    return None


@contextlib.contextmanager
def _session(nvml: Any | None):
    """`(nvml, inventory)` inside `nvmlInit`/`nvmlShutdown`; `(None, None)` without NVML."""
    try:
        if nvml is None:
            import pynvml as nvml
        nvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no pynvml, no driver: nothing to read
        yield None, None
        return
    try:
        try:
            devices = inventory(nvml)
        except nvml.NVMLError:
            devices = None
        yield nvml, devices
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()


def nvml_query(uuid: str, query: Any, nvml: Any | None = None) -> Any | None:
    """`query(nvml, handle)` for the device with `uuid` (GPU or MIG instance), or `None`.

    Any NVML failure (no library, no such device, not supported) gives `None`.
    """
    with _session(nvml) as (lib, devices):
        handle = _find(devices or [], uuid)
        if handle is None:
            return None
        try:
            return query(lib, handle)
        except lib.NVMLError:
            return None


def nvml_memory(uuid: str, nvml: Any | None = None) -> dict[str, int] | None:
    """NVML's `{"free", "total"}` bytes of the device with `uuid`, or `None` if unknown."""

    def read(lib: Any, handle: Any) -> dict[str, int]:
        mem = lib.nvmlDeviceGetMemoryInfo(handle)
        return {"free": int(mem.free), "total": int(mem.total)}

    return nvml_query(uuid, read, nvml)


def process_uuids(
    nvml: Any | None = None, env: Mapping[str, str] | None = None
) -> list[str] | None:
    """The UUIDs this process's CUDA devices have (TensorFlow's `GPU:k` is item k)."""
    env = os.environ if env is None else env
    with _session(nvml) as (_, devices):
        return None if devices is None else visible_uuids(devices, env)


def pin_for_plan(
    plan: Any, environ: MutableMapping[str, str] | None = None, nvml: Any | None = None
) -> str | None:
    """Make this process (call before TensorFlow touches a GPU) see the plan's GPUs.

    A `CUDA_VISIBLE_DEVICES` the user set that hides a planned GPU is kept (the user
    chose another device on purpose): then the returned warning says so.

    Args:
        plan: a `trainer.plan.Plan`; only GPU plans that record `target.device_uuids`
            are pinned.
        environ: the environment to change. Defaults to `os.environ`.
        nvml: a `pynvml`-like module for mapping indices. Defaults to `pynvml`.

    Returns:
        A warning when the plan's GPU is not the one this process will use, else `None`.
    """
    environ = os.environ if environ is None else environ
    target = plan.target
    planned = list(target.device_uuids or ())
    if target.device != "gpu" or not planned:
        return None
    with _session(nvml) as (_, devices):
        seen = None if devices is None else visible_uuids(devices, environ)
        here = {u for d in devices or [] for u in [d["uuid"], *(m["uuid"] for m in d["mig"])]}
    name = target.device_name or "the planned GPU"
    if "CUDA_VISIBLE_DEVICES" in environ and seen is not None and not set(planned) <= set(seen):
        where = ", ".join(seen) if seen else "no GPU"
        return (
            f"the plan was made for {name} ({', '.join(planned)}) but CUDA_VISIBLE_DEVICES="
            f"{environ['CUDA_VISIBLE_DEVICES']} shows {where}; training runs there, and "
            "its memory may differ (`fitplan plan` here makes a plan for it)"
        )
    if devices is not None and not set(planned) <= here:
        return (
            f"the plan was made for {name} ({', '.join(planned)}), which this machine does "
            "not have; training runs on the GPU CUDA shows instead, and its memory may differ "
            "(`fitplan plan` here makes a plan for it)"
        )
    environ.update(pin_env(planned))
    return None


def memory_limit_mib(budget_bytes: int, free_bytes: int | None, context_bytes: int) -> int:
    """The logical-device memory limit in MiB: the budget, or what is free if less.

    TensorFlow's BFC allocator takes its whole limit on the first allocation unless
    memory growth is on, so a limit above the free memory would fail outright.

    Args:
        budget_bytes: what the plan allows (`target.budget_bytes`).
        free_bytes: NVML's free memory on the device before TensorFlow mapped it, or
            `None` when unknown.
        context_bytes: the CUDA context's share of the free memory.
    """
    limit = budget_bytes
    if free_bytes is not None:
        limit = min(limit, max(free_bytes - context_bytes, _MIB))
    return max(1, limit // _MIB)


def configure_gpus(tf: Any, memory_limit_bytes: int | None) -> list[Any]:
    """Limit every visible GPU to `memory_limit_bytes`, or grow memory on demand if `None`.

    The one GPU configuration for trial children and training, so that what a trial
    measured is what training gets. Must run before TensorFlow initialises its devices
    (https://www.tensorflow.org/api_docs/python/tf/config/set_logical_device_configuration,
    https://www.tensorflow.org/api_docs/python/tf/config/experimental/set_memory_growth).

    Returns:
        The physical GPUs configured (empty without a GPU).
    """
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        if memory_limit_bytes is not None:
            mib = max(1, int(memory_limit_bytes) // _MIB)
            cfg = tf.config.LogicalDeviceConfiguration(memory_limit=mib)
            tf.config.set_logical_device_configuration(gpu, [cfg])
        else:
            tf.config.experimental.set_memory_growth(gpu, True)
    return gpus


__all__ = [
    "CUDA_CONTEXT_BYTES",
    "PIN_ORDER",
    "configure_gpus",
    "inventory",
    "memory_limit_mib",
    "mig_devices",
    "nvml_memory",
    "nvml_query",
    "pin_env",
    "pin_for_plan",
    "precision_for_capability",
    "process_uuids",
    "visible_uuids",
]
