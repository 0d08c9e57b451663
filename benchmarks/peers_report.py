"""The peers benchmark's header and table (`benchmarks/peers.py`): pure, no TensorFlow."""

from __future__ import annotations

import subprocess
from typing import Any

GIB = 2**30


def lscpu() -> dict[str, Any]:
    """`lscpu`'s model name and flags (empty where there is no lscpu)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return {"lscpu_model": fields.get("Model name"), "lscpu_flags": fields.get("Flags", "").split()}


def _gib(b: int | None) -> str:
    return "-" if b is None else f"{b / GIB:.2f} GiB"


def _row(r: dict[str, Any], minutes: float | None = None) -> str:
    mb = r.get("micro_batch")
    acc = r.get("accumulation_steps") or 1
    chosen = "none" if mb is None else f"{mb}" + (f" x {acc}" if acc > 1 else "")
    if r.get("error"):
        chosen += f" ({r['error'][:60]})"
    elif r.get("note"):
        chosen += f" ({r['note'][:60]})"
    t = r.get("training") or {}
    share = t.get("share")
    over = {True: "**over**", False: "no", None: "-"}[t.get("over")]
    if t.get("why"):
        over += f" ({t['why'][:50]})"
    planning = r.get("planning_s")
    cells = [
        r["strategy"],
        r["candidate"],
        _gib(r["budget_bytes"]),
        chosen,
        "-" if planning is None else f"{planning:.0f}",
        "-" if r.get("trials") is None else str(r["trials"]),
        "-" if r.get("ooms") is None else str(r["ooms"]),
        _gib(t.get("peak_bytes"))
        + (f" ({t['epochs']} epochs)" if minutes and t.get("epochs") else ""),
        "-" if share is None else f"{share:.0%}",
        over,
    ]
    return "| " + " | ".join(cells) + " |"


def _training(doc: dict[str, Any]) -> str:
    minutes = doc.get("train_minutes")
    what = (
        "`fitplan train --max-epochs 1`"
        if not minutes
        else f"a {minutes:g}-minute `fitplan train` (the plan's epochs and early stopping)"
    )
    if doc.get("rejudged"):
        what += f"; the choices (and their planning figures) are those of {doc['rejudged']}"
    return what


def render_markdown(doc: dict[str, Any]) -> str:
    """The header (date, CPU, load, memo note) and one table row per strategy x candidate x budget."""
    m = doc.get("machine", {})
    flags = " ".join(f for f in m.get("cpu_flags", []))
    memo = doc.get("memo", {})
    lines = [
        f"# Peers: batch-size searches vs fitplan ({doc['date']})",
        "",
        f"- CPU: {m.get('lscpu_model') or m.get('cpu')}, {m.get('cores')} cores, oneDNN level "
        f"{m.get('isa')} (flags: {flags}); TensorFlow {m.get('tensorflow')}, git {m.get('git_commit')}",
        f"- data: {doc['data']} (masks `{doc['masks']}`){' -- quick mode' if doc.get('quick') else ''}; "
        f"effective batch {doc['effective_batch']}",
        f"- load average {doc['load_average_start']:.1f} at the start, {doc['load_average_end']:.1f} at the end; "
        f"wall {doc['wall_s']:.0f} s",
        f"- {memo.get('note')}: {memo.get('trial_children')} trial children run, "
        f"{memo.get('trial_reuses')} trials reused; {memo.get('training_runs')} training runs, "
        f"{memo.get('training_reuses')} reused",
        "",
        "| strategy | candidate | budget | micro-batch | planning s | trials | OOMs in planning "
        "| training peak | % of budget | over? |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *(_row(r, doc.get("train_minutes")) for r in doc["rows"]),
        "",
        "planning s: fitplan's own planning time (cold cache); for a peer, the sum of its "
        "trials' wall times. trials: child processes. training peak: the highest epoch peak "
        f"(history.csv) of {_training(doc)} at that micro-batch.",
        "",
    ]
    return "\n".join(lines)
