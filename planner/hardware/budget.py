"""The default memory budget and precision policy, derived from a probe report.

Pure functions of the report dict, so the planner can re-derive them from a
saved report and tests can feed hand-written ones.
"""

from __future__ import annotations

from planner.hardware.gpu import compute_capability
from trainer.train.cgroup import effective_memory, memory_headroom
from trainer.train.device import (
    CUDA_CONTEXT_BYTES,
    PIN_ORDER,
    precision_for_capability,
    visible_uuids,
)
from trainer.units import fmt_bytes

# Share of the effective host memory a CPU run may plan for. The rest absorbs what a
# dry run does not see: RSS creeps ~4% between step 3 and step 20 (MEASURED.md), and
# other processes and the page cache move while training runs.
CPU_FRACTION = 0.90


# Below this a GPU is not worth planning for: the largest backbone's weights, gradients
# and Adam state alone (ResNet50 U-Net, 32.6M parameters x 16 bytes) take 0.5 GiB.
MIN_GPU_BUDGET_BYTES = 2**30

# Host RAM a GPU training process holds besides its data: Python, TensorFlow and the
# CUDA/cuDNN libraries loaded (public reports: 2-4 GiB RSS; not measured on this
# project's machines). Until a verification run on the GPU measures it, a GPU plan's
# host side is this plus the in-RAM cache.
GPU_HOST_PROCESS_BYTES = 4 * 2**30

_MIB = 2**20


def host_spare_bytes(budget: dict) -> int:
    """Host RAM a GPU plan can give an in-RAM cache: host budget minus the process."""
    return max(0, int(budget.get("host_bytes") or 0) - GPU_HOST_PROCESS_BYTES)


def tf_min_system_memory(free_bytes: int, cc_major: int | None, override_mb: str | None) -> int:
    """The GPU memory TensorFlow itself keeps out of its allocator.

    Mirrors `MinSystemMemory` in tensorflow/core/common_runtime/gpu/gpu_device.cc
    (TF 2.21): room for cuDNN/cuBLAS handles and kernels that live outside the
    BFC allocator, so the allocator's limit is free memory minus this figure.

    Args:
        free_bytes: free device memory.
        cc_major: compute capability major version; `None` is treated as 8.
        override_mb: `TF_DEVICE_MIN_SYS_MEMORY_IN_MB` as set, which TF obeys instead.
    """
    if override_mb and override_mb.strip().isdigit() and int(override_mb) * _MIB <= free_bytes:
        return int(override_mb) * _MIB
    if free_bytes < 2 * 2**30:
        return 225 * _MIB
    major = 8 if cc_major is None else cc_major
    if major <= 6:
        return 500 * _MIB
    if major == 7:
        return 1050 * _MIB
    return 1536 * _MIB if major == 8 else 1800 * _MIB


def gpu_reserve_bytes(gpu: dict, env: dict) -> int:
    """CUDA context plus TensorFlow's own reserve: what the allocator can never use."""
    cc = compute_capability(gpu)
    tf_part = tf_min_system_memory(
        gpu["memory_free_bytes"],
        None if cc is None else cc[0],
        env.get("TF_DEVICE_MIN_SYS_MEMORY_IN_MB"),
    )
    return CUDA_CONTEXT_BYTES + tf_part


def default_budget(report: dict) -> dict:
    """The device to train on and the bytes a plan may use there.

    GPU when TensorFlow can use one: the visible GPU with the most free memory
    (ties: lowest index), its free memory minus `gpu_reserve_bytes`. Otherwise CPU:
    `CPU_FRACTION` of min(available RAM, cgroup limit - usage).

    Args:
        report: a `probe` report (only `gpus`, `host`, `tensorflow` and `env` are read).

    Returns:
        `{"device", "device_index", "device_name", "tf_device", "bytes", "source",
        "derivation", "all_devices", "device_uuids", "memory_total_bytes",
        "host_bytes"}`; `all_devices` lists every GPU considered, `device_uuids` the
        chosen one's UUID (a `MIG-` UUID for a MIG instance: with MIG on, each instance
        is a device of its own), `host_bytes` the host RAM budget beside the GPU.
    """
    env = report.get("env") or {}
    gpus, why_not = _usable_gpus(report, env)
    options = []
    for g in gpus:
        reserve = gpu_reserve_bytes(g, env)
        free = g["memory_free_bytes"]
        options.append({"gpu": g, "reserve": reserve, "bytes": max(0, free - reserve)})
    if options:
        best = max(options, key=lambda o: (o["gpu"]["memory_free_bytes"], -o["gpu"]["index"]))
        g = best["gpu"]
        derivation = (
            f"GPU {g['index']} free {fmt_bytes(g['memory_free_bytes'])} minus reserve "
            f"{fmt_bytes(best['reserve'])} (CUDA context {fmt_bytes(CUDA_CONTEXT_BYTES)} + "
            f"TensorFlow's own {fmt_bytes(best['reserve'] - CUDA_CONTEXT_BYTES)})"
        )
        if best["bytes"] >= MIN_GPU_BUDGET_BYTES:
            return {
                "device": "gpu",
                "device_index": g["index"],
                "device_name": g.get("name"),
                "tf_device": f"/GPU:{[o['gpu']['uuid'] for o in options].index(g['uuid'])}",
                "bytes": best["bytes"],
                "source": "probe",
                "derivation": derivation,
                "all_devices": [
                    {
                        "device_index": o["gpu"]["index"],
                        "device_name": o["gpu"].get("name"),
                        "free_bytes": o["gpu"]["memory_free_bytes"],
                        "bytes": o["bytes"],
                    }
                    for o in options
                ],
                **gpu_identity([g]),
                "host_bytes": _cpu_budget(report, None)["bytes"],
            }
        why_not = f"{derivation} leaves less than {fmt_bytes(MIN_GPU_BUDGET_BYTES)}"
    return _cpu_budget(report, why_not)


def gpu_identity(used: list[dict]) -> dict:
    """What a plan records of its GPUs: UUIDs (CUDA order) and the first one's total memory."""
    uuids = [g["uuid"] for g in used if g.get("uuid")]
    return {
        "device_uuids": uuids if len(uuids) == len(used) else None,
        "memory_total_bytes": used[0].get("memory_total_bytes") if used else None,
    }


def _devices(gpus: list[dict]) -> list[dict]:
    """Each GPU as CUDA sees it: itself, or its MIG instances when MIG is on."""
    out = []
    for g in gpus:
        migs = g.get("mig_devices") or []
        if not migs:
            out.append(g)
        for m in migs:
            out.append(
                {
                    **g,
                    "uuid": m["uuid"],
                    "name": f"{g.get('name')} MIG {m['uuid'][4:12]}",
                    "memory_total_bytes": m["memory_total_bytes"],
                    "memory_free_bytes": m["memory_free_bytes"],
                    "mig_parent_uuid": g.get("uuid"),
                }
            )
    return out


def _usable_gpus(report: dict, env: dict) -> tuple[list[dict], str | None]:
    """The devices TensorFlow will see, in CUDA order, with a readable free figure.

    `CUDA_VISIBLE_DEVICES` is mapped by UUID (`trainer.train.device.visible_uuids`);
    indices are read in NVML's (PCI bus) order, the order fitplan pins its processes to.
    """
    listed = report.get("gpus") or []
    if not any(g.get("memory_free_bytes") is not None for g in listed):
        return [], None
    devices = [{"uuid": g.get("uuid"), "mig": g.get("mig_devices") or []} for g in listed]
    bus_env = {**env, "CUDA_DEVICE_ORDER": PIN_ORDER}
    visible = visible_uuids(devices, {k: v for k, v in bus_env.items() if v is not None})
    units = {d["uuid"]: d for d in _devices(listed) if d.get("memory_free_bytes") is not None}
    gpus = [units[u] for u in visible or [] if u in units]
    if not gpus:
        return [], "CUDA_VISIBLE_DEVICES hides every GPU"
    tf = report.get("tensorflow")
    # Without the TensorFlow fields (--no-tf) assume TF will see what NVML sees.
    if tf and tf.get("version") and tf.get("gpu_count") == 0:
        return [], f"TensorFlow sees no GPU (built with CUDA: {tf.get('built_with_cuda')})"
    return gpus, None


def _cpu_budget(report: dict, why_not_gpu: str | None) -> dict:
    host = report["host"]
    available = host["ram_available_bytes"]
    cgroup = host.get("cgroup") or {}
    limit = cgroup.get("memory_limit_bytes")
    effective = effective_memory(available, cgroup)
    if limit is None:
        derivation = (
            f"{CPU_FRACTION:.0%} of available RAM {fmt_bytes(available)} (no cgroup memory limit)"
        )
    else:
        headroom = memory_headroom(cgroup)
        derivation = (
            f"{CPU_FRACTION:.0%} of min(available RAM {fmt_bytes(available)}, cgroup limit "
            f"{fmt_bytes(limit)} - usage {fmt_bytes(limit - headroom)} = {fmt_bytes(headroom)})"
        )
    if why_not_gpu:
        derivation += f"; not a GPU: {why_not_gpu}"
    return {
        "device": "cpu",
        "device_index": None,
        "device_name": (report.get("cpu") or {}).get("model"),
        "tf_device": "/CPU:0",
        "bytes": int(effective * CPU_FRACTION),
        "source": "probe",
        "derivation": derivation,
        "all_devices": [],
    }


def precision_advice(report: dict, budget: dict) -> dict:
    """The Keras mixed-precision policy worth using on the budget's device, and why."""
    if budget["device"] == "gpu":
        gpu = next(g for g in report["gpus"] if g["index"] == budget["device_index"])
        cc = compute_capability(gpu)
        name = "compute capability " + ("unknown" if cc is None else f"{cc[0]}.{cc[1]}")
        policy = precision_for_capability(cc)
        why = {
            "mixed_bfloat16": "bfloat16 tensor cores, no loss scaling",
            "mixed_float16": "float16 tensor cores (loss scaling on)",
            "float32": "no tensor cores, mixed precision gains nothing (float16 is slow there)",
        }[policy]
        return _advice(policy, f"{name}: {why}")
    cpu = report.get("cpu") or {}
    if cpu.get("bfloat16_fast"):
        # MEASURED.md reports 20-34% faster steps on an AVX512_BF16 CPU, but the planner's
        # own trials found Conv2D backprop in bfloat16 16-24x slower than float32 with
        # TF 2.21 (docs/planning.md): the dry runs decide; advise float32 until they do.
        return _advice(
            "float32",
            "CPU has AVX512_BF16/AMX, but bfloat16 conv training measured slower than float32 "
            "in TF 2.21; `fitplan plan --precisions float32,mixed_bfloat16` measures both",
        )
    # mixed_float16 is never advised on a CPU: measured 5.7x slower (MEASURED.md).
    return _advice(
        "float32", "CPU without AVX512_BF16/AMX: bfloat16 is emulated; float16 on CPU is ~5x slower"
    )


def _advice(policy: str, reason: str) -> dict:
    return {"policy": policy, "reason": reason}
