"""Rendering a plan for people: the candidates table and the summary (rich)."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table

from trainer.units import gib


def _gib(n: Any) -> str:
    return gib(n, missing="-", unit=False)


def plan_table(plan_dict: dict[str, Any]) -> Group:
    """Candidates with their verdicts, then the chosen plan and its prediction."""
    ev = plan_dict.get("evidence") or {}
    rows = (ev.get("choice") or {}).get("evaluations", [])
    return Group(_candidates_table(rows), _summary_table(plan_dict))


def _candidates_table(rows: list[dict[str, Any]]) -> Table:
    """One row per candidate evaluation: its micro-batch, peak, times, score and verdict."""
    cands = Table(title="candidates", show_lines=False)
    for col in (
        "backbone",
        "input",
        "precision",
        "verdict",
        "micro-batch",
        "peak GiB",
        "s/step",
        "epoch s",
        "epochs",
        "score",
        "reason",
    ):
        cands.add_column(col, overflow="fold")
    for r in rows:
        style = "bold green" if r.get("verdict") == "chosen" else None
        size = r.get("input_size") or ["?", "?"]
        cands.add_row(
            r.get("backbone", "?"),
            f"{size[0]}x{size[1]}",
            r.get("precision", "?"),
            r.get("verdict", "?"),
            str(r.get("micro_batch") or "-"),
            _gib(r.get("predicted_peak_bytes")),
            f"{r['step_time_s']:.2f}" if r.get("step_time_s") else "-",
            f"{r['epoch_time_s']:.0f}" if r.get("epoch_time_s") else "-",
            str(r.get("epochs_possible") or "-"),
            f"{r.get('score', 0):.3f}",
            r.get("reason", ""),
            style=style,
        )
    return cands


def _summary_table(plan_dict: dict[str, Any]) -> Table:
    """The chosen plan: backbone, batch, data cache, predicted memory and time, planning cost."""
    ev = plan_dict.get("evidence") or {}
    pred = plan_dict.get("prediction") or {}
    summary = Table(title="plan", show_header=False)
    size = plan_dict["input_size"]
    summary.add_row(
        "backbone", f"{plan_dict['backbone']} at {size[0]}x{size[1]}, {plan_dict['precision']}"
    )
    summary.add_row(
        "batch",
        f"micro-batch {plan_dict['micro_batch']} x accumulation {plan_dict['accumulation_steps']}"
        f" = effective {plan_dict['micro_batch'] * plan_dict['accumulation_steps']}"
        f", BatchNorm {plan_dict['normalization']}",
    )
    if ev.get("effective_batch_reason"):
        summary.add_row("", ev["effective_batch_reason"] + _lr_scaling(plan_dict))
    summary.add_row("data", f"{plan_dict['data']['cache']}")
    target = plan_dict.get("target") or {}
    summary.add_row(
        "memory",
        f"predicted peak {_gib(pred.get('peak_bytes'))} GiB of budget {_gib(target.get('budget_bytes'))} GiB"
        f" ({target.get('budget_source')}), headroom {_gib(pred.get('headroom_bytes'))} GiB"
        + (f", at most {_gib(pred['bound_bytes'])} GiB" if pred.get("bound_bytes") else ""),
    )
    rise = _rise_line(pred)
    if rise:
        summary.add_row("", rise)
    if pred.get("unused_budget_reason"):
        share = pred.get("budget_share") or 0
        summary.add_row("", f"{share:.0%} of the budget: {pred['unused_budget_reason']}")
    summary.add_row(
        "time",
        f"{pred.get('step_time_s', 0):.2f} s/step, {pred.get('epoch_time_s', 0):.0f} s/epoch, "
        + (
            f"about {pred.get('epochs', plan_dict['epochs'])} epochs in the limit of "
            f"{plan_dict['time_limit_s'] / 60:.1f} min (the clock ends the run)"
            if plan_dict.get("time_limit_s")
            else f"up to {plan_dict['epochs']} epochs"
        ),
    )
    summary.add_row(
        "planning",
        f"{ev.get('planning_time_s', 0):.0f} s, {ev.get('children', 0)} child processes, "
        f"{ev.get('traces', 0)} graph traces" + _reused(ev.get("planning") or {}),
    )
    return summary


def _lr_scaling(plan_dict: dict[str, Any]) -> str:
    """ "; learning rate x sqrt(8/16)" when the plan scales its rate with the batch."""
    opt = plan_dict.get("optimizer") or {}
    if opt.get("lr_scaling", "none") == "none" or not opt.get("reference_batch"):
        return ""
    replicas = plan_dict.get("replicas", 1)
    batch = plan_dict["micro_batch"] * replicas * plan_dict["accumulation_steps"]
    rule = "sqrt" if opt["lr_scaling"] == "sqrt" else ""
    return f"; learning rate x {rule}({batch}/{opt['reference_batch']})"


def _reused(planning: dict[str, Any]) -> str:
    """What planning took from the measurement cache or estimated (planner.measure_order)."""
    parts = []
    if planning.get("trial_points_cached"):
        parts.append(
            f"{planning['trial_points_cached']} of {planning['trial_points']} trial points cached"
        )
    if planning.get("verification_cached"):
        parts.append("verification cached")
    if planning.get("trial_points_estimated"):
        parts.append(f"{planning['trial_points_estimated']} point(s) estimated, not measured")
    if planning.get("cap_s"):
        parts.append(f"cap {planning['cap_s']:.0f} s")
    return "; " + ", ".join(parts) if parts else ""


def _rise_line(pred: dict[str, Any]) -> str | None:
    """What the run's length adds (`trainer.peak`): the verification run's peak and the
    expected peak of the planned run and of one epoch, or `None` without the curve."""
    from trainer.peak import expected_peak_bytes

    growth, steps = pred.get("growth"), pred.get("planned_steps")
    if not growth or not steps:
        return None
    one_epoch = expected_peak_bytes(pred, pred.get("micro_batches_per_epoch"))
    return (
        f"rises with the train steps: {_gib(growth['base_bytes'])} GiB verified "
        f"({growth['verified_steps']} steps, with the cache), {_gib(pred['peak_bytes'])} GiB "
        f"expected over the planned {steps}, {_gib(one_epoch)} GiB over one epoch"
    )
