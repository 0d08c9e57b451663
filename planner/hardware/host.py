"""Host memory (cgroup-aware), CPU features and free disk space."""

from __future__ import annotations

import math
import os
import platform
import shutil
from pathlib import Path

import psutil

from trainer.train.cgroup import effective_memory, read_cgroup

# CPU flags (as /proc/cpuinfo spells them) that decide the precision policy.
FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def probe_host(cgroup_root: Path, proc_self_cgroup: Path) -> dict:
    """RAM, swap and the cgroup limit, with the memory this process may really use.

    Args:
        cgroup_root: where the cgroup file systems are mounted.
        proc_self_cgroup: the file naming this process's cgroups.
    """
    vm = psutil.virtual_memory()
    swap = psutil.swap_memory()
    cgroup = read_cgroup(cgroup_root, proc_self_cgroup)
    return {
        "hostname": platform.node(),
        "ram_total_bytes": int(vm.total),
        "ram_available_bytes": int(vm.available),
        "swap_total_bytes": int(swap.total),
        "swap_free_bytes": int(swap.free),
        "cgroup": cgroup,
        "effective_memory_bytes": effective_memory(int(vm.available), cgroup),
    }


def probe_cpu(cgroup: dict, cpuinfo: Path = Path("/proc/cpuinfo")) -> dict:
    """The CPU model, usable cores and the flags that matter for the precision policy.

    Args:
        cgroup: the `read_cgroup` result (for the CPU quota).
        cpuinfo: the kernel's CPU description (x86 `flags` or Arm `Features`).
    """
    model, flags = _parse_cpuinfo(cpuinfo)
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        affinity = os.cpu_count() or 1
    quota = cgroup.get("cpu_quota")
    found = {flag: flag in flags for flag in FLAGS_OF_INTEREST}
    return {
        "model": model or platform.processor() or platform.machine(),
        "logical_cores": psutil.cpu_count(logical=True) or affinity,
        "affinity_cpus": affinity,
        "cgroup_cpu_quota": quota,
        "usable_cpus": usable_cpus(affinity, quota),
        "flags": found,
        # oneDNN runs bfloat16 natively only with AVX512_BF16 or AMX; without them
        # it converts in software and gains nothing (MEASURED.md: 20-34% faster with them).
        "bfloat16_fast": found["avx512_bf16"] or found["amx_bf16"],
    }


def usable_cpus(affinity: int, cpu_quota: float | None) -> int:
    """CPUs this process can keep busy: its affinity set, capped by the CPU quota.

    A fractional quota rounds up (1.5 CPUs -> 2 threads), as the JVM and .NET do:
    the second thread still gets half a core.
    """
    if cpu_quota is None:
        return max(1, affinity)
    return max(1, min(affinity, math.ceil(cpu_quota)))


def _parse_cpuinfo(path: Path) -> tuple[str | None, set[str]]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None, set()
    return parse_cpuinfo(text)


def parse_cpuinfo(text: str) -> tuple[str | None, set[str]]:
    """`(model name, feature flags)` from /proc/cpuinfo's text (x86 `flags`, Arm `Features`)."""
    model, flags = None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and model is None:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return model, flags


def probe_disk(out_dir: Path) -> dict:
    """Free and total bytes on the file system that will hold `out_dir`.

    Args:
        out_dir: where runs will be written; it need not exist yet (its nearest
            existing parent is measured).
    """
    path = Path(out_dir).expanduser().absolute()
    measured = next((p for p in (path, *path.parents) if p.exists()), path.anchor)
    try:
        usage = shutil.disk_usage(measured)
    except OSError as exc:
        return {"path": str(path), "free_bytes": None, "total_bytes": None, "error": str(exc)}
    return {
        "path": str(path),
        "measured_at": str(measured),
        "free_bytes": int(usage.free),
        "total_bytes": int(usage.total),
    }
