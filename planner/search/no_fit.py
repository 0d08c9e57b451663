"""What `planner.search.choose.choose` raises when no candidate is feasible, and durations.

A memory budget nothing fits is a `BudgetError` naming the smallest need and the budget
that would hold it; a time budget no candidate trains one epoch in names the fastest
epoch; when every trial failed it is a plain `FitplanError`: not the budget's fault.
"""

from __future__ import annotations

from planner.search.presets import GIB
from trainer.errors import BudgetError, FitplanError


def raise_budget(evals, budget, allowed, time_budget_s, budget_for=None) -> None:
    """Raise why nothing in `evals` is feasible (`BudgetError` or `FitplanError`)."""
    slow = [e for e in evals if e.verdict == "feasible"]
    if slow:
        fastest = min(slow, key=lambda e: e.epoch_time_s)
        raise BudgetError(
            f"no candidate trains one epoch within the time budget {dur(time_budget_s)}: the fastest, "
            f"{fastest.candidate.label}, needs {dur(fastest.epoch_time_s)} per epoch",
            hint="raise --budget-time or try smaller --sizes",
        )
    needs = [e for e in evals if e.need_bytes is not None]
    measured = [e for e in needs if e.verdict != "pruned"]
    pool = measured or needs
    if not pool:
        first = next((e.reason for e in evals), "no candidates")
        raise FitplanError(
            f"no candidate could be measured: {first}",
            hint="see each candidate's reason in the evidence",
        )
    small = min(pool, key=lambda e: e.need_bytes)
    kind = "measured" if measured else "estimated"
    needed = budget_for(small.need_bytes) if budget_for else small.need_bytes / (allowed / budget)
    raise BudgetError(
        f"no candidate fits the memory budget {budget / GIB:.2f} GiB (allowed {allowed / GIB:.2f} GiB "
        f"after headroom): the smallest {kind} need is {small.need_bytes / GIB:.2f} GiB "
        f"({small.candidate.label}, {small.need_at})",
        hint=f"raise --budget-memory to at least {needed / GIB:.2f} GiB",
    )


def dur(seconds: float | None) -> str:
    """`seconds` for people: "10 min", "90 s" or "unlimited time"."""
    if seconds is None:
        return "unlimited time"
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"
