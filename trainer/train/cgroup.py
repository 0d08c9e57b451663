"""The memory and CPU limits of this process's cgroup (v2 or v1), and the memory it may use.

Inside a container psutil reports the host's RAM and cores, while the kernel
kills the process at the cgroup's limit: that limit is what a budget must obey.
Both the planner's probe and the trainer's preflight read it here (the trainer
never imports `planner`).
A limit may sit on any ancestor of the process's own cgroup, so every level from
the own cgroup up to the mount root is read and the tightest one wins. Levels
that do not exist under the mount (a container that sees only its own subtree)
are skipped.
"""

from __future__ import annotations

from pathlib import Path

# cgroup v1 writes "no limit" as the largest page-aligned 63-bit number
# (9223372036854771712 with 4 KiB pages); anything this large is no limit.
V1_UNLIMITED = 1 << 62


def read_cgroup(
    cgroup_root: Path = Path("/sys/fs/cgroup"),
    proc_self_cgroup: Path = Path("/proc/self/cgroup"),
) -> dict:
    """Read this process's cgroup memory limit, memory use and CPU quota.

    Args:
        cgroup_root: where the cgroup file systems are mounted.
        proc_self_cgroup: the file naming this process's cgroups.

    Returns:
        `{"version": 2 | 1 | None, "path": str | None, "memory_limit_bytes": int | None,
        "memory_usage_bytes": int | None, "cpu_quota": float | None}`. `None` for
        the limits means no limit (or nothing readable). The usage is the working
        set: usage minus inactive file cache, which the kernel reclaims before it
        kills anything (the figure Kubernetes uses).
    """
    own = _own_paths(proc_self_cgroup)
    if (cgroup_root / "cgroup.controllers").is_file():
        rel = own.get("", "/")
        memory = _tightest(_levels(cgroup_root, rel), "memory.max", "memory.current", "memory.stat")
        cpu = _cpu_quota_v2(_levels(cgroup_root, rel))
        version = 2
    elif (cgroup_root / "memory").is_dir() or _v1_cpu_dir(cgroup_root) is not None:
        levels = _levels(cgroup_root / "memory", own.get("memory", "/"))
        memory = _tightest(levels, "memory.limit_in_bytes", "memory.usage_in_bytes", "memory.stat")
        cpu_dir = _v1_cpu_dir(cgroup_root)
        cpu = None if cpu_dir is None else _cpu_quota_v1(_levels(cpu_dir, own.get("cpu", "/")))
        version = 1
    else:
        memory = {"path": None, "memory_limit_bytes": None, "memory_usage_bytes": None}
        return {"version": None, **memory, "cpu_quota": None}
    return {"version": version, **memory, "cpu_quota": cpu}


def memory_headroom(cgroup: dict) -> int | None:
    """Bytes the cgroup still allows (limit minus usage), or `None` without a limit."""
    limit = cgroup.get("memory_limit_bytes")
    if limit is None:
        return None
    return max(0, limit - (cgroup.get("memory_usage_bytes") or 0))


def effective_memory(available: int, cgroup: dict) -> int:
    """min(available RAM, cgroup limit - usage). Swap is left out on purpose.

    A training step that spills into swap runs orders of magnitude slower, so
    swap is never counted as memory to plan with.
    """
    headroom = memory_headroom(cgroup)
    return available if headroom is None else min(available, headroom)


def _own_paths(proc_self_cgroup: Path) -> dict[str, str]:
    """Controller name -> cgroup path; the v2 unified hierarchy is the key `""`."""
    try:
        text = proc_self_cgroup.read_text()
    except OSError:
        return {}
    paths: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for controller in parts[1].split(",") if parts[1] else [""]:
            paths[controller] = parts[2]
    return paths


def _levels(base: Path, rel: str) -> list[Path]:
    """Existing directories from `base/rel` up to `base`, innermost first."""
    parts = [p for p in rel.split("/") if p and p not in (".", "..")]
    dirs = [base.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]
    return [d for d in dirs if d.is_dir()]


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.lstrip("-").isdigit() else None


def _inactive_file(stat: Path) -> int:
    try:
        lines = stat.read_text().splitlines()
    except OSError:
        return 0
    fields = dict(line.split(" ", 1) for line in lines if " " in line)
    # v1 names the hierarchical figure total_inactive_file; v2 has only inactive_file.
    value = fields.get("total_inactive_file", fields.get("inactive_file", "0")).strip()
    return int(value) if value.isdigit() else 0


def _tightest(levels: list[Path], limit_name: str, usage_name: str, stat_name: str) -> dict:
    best: dict = {"path": str(levels[0]) if levels else None, "memory_limit_bytes": None}
    best["memory_usage_bytes"] = _working_set(levels[0], usage_name, stat_name) if levels else None
    for level in levels:
        limit = _read_int(level / limit_name)  # v2 "max" reads as None: no limit
        if limit is None or limit >= V1_UNLIMITED:
            continue
        usage = _working_set(level, usage_name, stat_name)
        candidate = {"path": str(level), "memory_limit_bytes": limit, "memory_usage_bytes": usage}
        if best["memory_limit_bytes"] is None or memory_headroom(candidate) < memory_headroom(best):
            best = candidate
    return best


def _working_set(level: Path, usage_name: str, stat_name: str) -> int | None:
    usage = _read_int(level / usage_name)
    if usage is None:
        return None
    return max(0, usage - _inactive_file(level / stat_name))


def _cpu_quota_v2(levels: list[Path]) -> float | None:
    quotas = []
    for level in levels:
        try:
            quota, _, period = (level / "cpu.max").read_text().strip().partition(" ")
        except OSError:
            continue
        if quota.isdigit() and period.strip().isdigit() and int(period) > 0:
            quotas.append(int(quota) / int(period))
    return min(quotas) if quotas else None


def _v1_cpu_dir(cgroup_root: Path) -> Path | None:
    for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        if (cgroup_root / name).is_dir():
            return cgroup_root / name
    return None


def _cpu_quota_v1(levels: list[Path]) -> float | None:
    quotas = []
    for level in levels:
        quota = _read_int(level / "cpu.cfs_quota_us")
        period = _read_int(level / "cpu.cfs_period_us")
        if quota is not None and quota > 0 and period:
            quotas.append(quota / period)
    return min(quotas) if quotas else None
