"""The human view of a probe report (`fitplan probe` without `--json`)."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from trainer.units import fmt_bytes


def probe_table(report: dict) -> RenderableType:
    """Render a `probe` report as rich tables: GPUs, then host, CPU, TensorFlow, disk, budget."""
    parts: list[RenderableType] = [_gpu_table(report)]
    facts = Table(show_header=False, box=None, pad_edge=False)
    facts.add_column(style="bold")
    facts.add_column()
    for key, value in _facts(report):
        facts.add_row(key, value)
    parts.append(facts)
    budget = report["budget"]
    advice = report["precision_advice"]
    parts.append(
        Text.assemble(
            ("budget  ", "bold green"),
            f"{fmt_bytes(budget['bytes'])} on {budget['device']} "
            f"({budget['device_name'] or '?'}, {budget['tf_device']}"
            + "".join(f", {u}" for u in budget.get("device_uuids") or ())
            + ")\n",
            ("        ", ""),
            budget["derivation"],
            "\n",
            ("advice  ", "bold green"),
            f"{advice['policy']}: {advice['reason']}",
        )
    )
    parts.append(Text(f"probe took {report['probe_time_s']:.2f} s", style="dim"))
    return Group(*parts)


def _gpu_table(report: dict) -> RenderableType:
    nvml = report["nvml"]
    if not report["gpus"]:
        return Text(f"GPUs: none ({nvml['reason']})", style="yellow")
    table = Table(title="GPUs (NVML)", title_justify="left")
    for col in ("#", "name", "total", "free", "used", "others", "cc", "driver / CUDA"):
        table.add_column(
            col, justify="right" if col in ("total", "free", "used", "others") else "left"
        )
    for g in report["gpus"]:
        table.add_row(
            str(g["index"]),
            g.get("name") or "?",
            fmt_bytes(g.get("memory_total_bytes")),
            fmt_bytes(g.get("memory_free_bytes")),
            fmt_bytes(g.get("memory_used_bytes")),
            fmt_bytes(g.get("other_processes_bytes")),
            g.get("compute_capability") or "?",
            f"{g.get('driver_version') or '?'} / {g.get('cuda_driver_version') or '?'}",
        )
    return table


def _facts(report: dict) -> list[tuple[str, str]]:
    host, cpu, disk, tf = report["host"], report["cpu"], report["disk"], report["tensorflow"]
    cg = host["cgroup"]
    limit = cg["memory_limit_bytes"]
    cgroup = (
        "none found"
        if cg["version"] is None
        else f"v{cg['version']}, limit {fmt_bytes(limit) if limit is not None else 'none'}, "
        f"usage {fmt_bytes(cg['memory_usage_bytes'])}"
    )
    flags = ", ".join(f for f, on in cpu["flags"].items() if on) or "none of interest"
    rows = [
        (
            "RAM",
            f"{fmt_bytes(host['ram_available_bytes'])} available of {fmt_bytes(host['ram_total_bytes'])}",
        ),
        ("swap", _swap(host)),
        ("cgroup", cgroup),
        ("usable memory", fmt_bytes(host["effective_memory_bytes"])),
        ("CPU", f"{cpu['model']}, {cpu['usable_cpus']} usable of {cpu['logical_cores']} logical"),
        ("CPU flags", f"{flags} (fast bfloat16: {'yes' if cpu['bfloat16_fast'] else 'no'})"),
    ]
    if tf is None:
        rows.append(("TensorFlow", "not probed (--no-tf)"))
    elif tf.get("version") is None:
        rows.append(("TensorFlow", f"import failed: {tf.get('error')}"))
    else:
        devices = ", ".join(
            d["name"].removeprefix("/physical_device:") for d in tf["physical_devices"]
        )
        rows.append(
            (
                "TensorFlow",
                f"{tf['version']} (CUDA build: {'yes' if tf['built_with_cuda'] else 'no'}), "
                f"devices {devices}, import {tf['import_time_s']:.1f} s",
            )
        )
    free = fmt_bytes(disk.get("free_bytes"))
    rows.append(("disk", f"{free} free of {fmt_bytes(disk.get('total_bytes'))} at {disk['path']}"))
    return rows


def _swap(host: dict) -> str:
    if not host["swap_total_bytes"]:
        return "none"
    return f"{fmt_bytes(host['swap_free_bytes'])} free of {fmt_bytes(host['swap_total_bytes'])}"
