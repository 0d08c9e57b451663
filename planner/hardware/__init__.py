"""`fitplan probe`: what this machine offers a training run, and the budget it implies.

`probe()` returns one JSON-able report (schema: docs/probe.md). Nothing here
raises for missing hardware: no NVML, no GPU, no cgroup or no TensorFlow is
reported with its reason and the probe carries on, because fitplan must plan
for whatever machine it finds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from planner.hardware.budget import default_budget, precision_advice
from planner.hardware.gpu import probe_gpus
from planner.hardware.host import probe_cpu, probe_disk, probe_host
from planner.hardware.table import probe_table

__all__ = ["default_budget", "precision_advice", "probe", "probe_table", "REPORT_VERSION"]

REPORT_VERSION = 1

# Environment variables that change which GPU TensorFlow uses or how much it keeps back.
_ENV_KEYS = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "TF_DEVICE_MIN_SYS_MEMORY_IN_MB")


def probe(
    out_dir: Path = Path("."),
    with_tensorflow: bool = True,
    *,
    nvml: Any | None = None,
    cgroup_root: Path = Path("/sys/fs/cgroup"),
    proc_self_cgroup: Path = Path("/proc/self/cgroup"),
    cpuinfo: Path = Path("/proc/cpuinfo"),
    env: Mapping[str, str] | None = None,
) -> dict:
    """Probe GPUs, host memory, CPU, disk and TensorFlow; derive a memory budget.

    Args:
        out_dir: where runs will be written; its file system's free space is
            reported. Defaults to the current directory.
        with_tensorflow: import TensorFlow to report its version, CUDA build and
            devices (about 3 s and 0.5 GiB). `False` leaves `tensorflow` null.
        nvml: a `pynvml`-like module. Defaults to `None`: import `pynvml`.
        cgroup_root: where the cgroup file systems are mounted.
        proc_self_cgroup: the file naming this process's cgroups.
        cpuinfo: the kernel's CPU description.
        env: environment to read `CUDA_VISIBLE_DEVICES` and friends from.
            Defaults to `None`: `os.environ`.

    Returns:
        The report dict; see docs/probe.md for every field.
    """
    start = time.perf_counter()
    env = os.environ if env is None else env
    # NVML first: it must see GPU memory before anything here could create a CUDA context.
    gpus, nvml_status = probe_gpus(nvml)
    host = probe_host(cgroup_root, proc_self_cgroup)
    report: dict[str, Any] = {
        "version": REPORT_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "gpus": gpus,
        "nvml": nvml_status,
        "host": host,
        "cpu": probe_cpu(host["cgroup"], cpuinfo),
        "tensorflow": probe_tensorflow() if with_tensorflow else None,
        "disk": probe_disk(out_dir),
        "env": {key: env.get(key) for key in _ENV_KEYS},
    }
    report["budget"] = default_budget(report)
    report["precision_advice"] = precision_advice(report, report["budget"])
    report["probe_time_s"] = round(time.perf_counter() - start, 3)
    return report


def probe_tensorflow() -> dict:
    """TensorFlow's version, CUDA build and physical devices, timing the import.

    TensorFlow is imported here and nowhere else in the probe: it costs seconds
    and half a GiB, and `--no-tf` must not pay that. Listing physical devices does
    not create a CUDA context, so no GPU memory is taken.
    """
    start = time.perf_counter()
    try:
        import tensorflow as tf
    except Exception as exc:  # a broken install is reported, not fatal: probe carries on
        return {"version": None, "error": f"{type(exc).__name__}: {exc}", "import_time_s": None}
    import_time = time.perf_counter() - start
    build = dict(tf.sysconfig.get_build_info())
    devices = tf.config.list_physical_devices()
    return {
        "version": tf.__version__,
        "built_with_cuda": bool(tf.test.is_built_with_cuda()),
        "cuda_version": build.get("cuda_version"),
        "cudnn_version": build.get("cudnn_version"),
        "physical_devices": [{"name": d.name, "device_type": d.device_type} for d in devices],
        "gpu_count": sum(d.device_type == "GPU" for d in devices),
        "import_time_s": round(import_time, 3),
    }
