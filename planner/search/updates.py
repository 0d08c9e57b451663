"""Updates, not just epochs: the effective batch a short time budget calls for (issue 15, 5).

On a slow machine a short time budget buys few optimizer updates at the target effective
batch (16): `train --auto --budget-time 10m` made 18 in all on a 123-image RGB set of
480x360 on 2 cores. Below the critical batch size, a run needs about the same number of
samples to reach a loss at any batch, so a smaller batch reaches it in fewer samples'
time (McCandlish et al. 2018, "An Empirical Model of Large-Batch Training",
arXiv:1812.06162); on a CPU, whose step time grows with the batch, more updates are what
the budget can buy. `settle` halves a candidate's effective batch (16 -> 8 -> 4, never
below `Objective.min_effective_batch`) until the updates it buys reach
`Objective.updates_wanted`; the plan then scales the learning rate by sqrt(B / 16), the
square-root rule for Adam (Malladi et al. 2022, "On the SDEs and Scaling Rules for
Adaptive Gradient Algorithms", NeurIPS; `planner.build`).

Pure: the caller (`planner.search.choose`) evaluates a candidate at a given effective batch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from planner.search.choice import Evaluation
from planner.search.presets import Objective


def updates_in(time_s: float, epoch_s: float, updates_per_epoch: int, max_epochs: int) -> int:
    """Optimizer updates a run of `time_s` seconds makes.

    Args:
        time_s: training time, seconds.
        epoch_s: one epoch's time (validation included), seconds.
        updates_per_epoch: optimizer updates per epoch.
        max_epochs: the plan's epoch cap.

    Returns:
        Whole epochs (at most `max_epochs`) x `updates_per_epoch`, as the plan trains them;
        when not even one epoch fits (the `--auto` fallback's partial epoch), the updates
        that fit in `time_s`.
    """
    if epoch_s <= 0:
        return max_epochs * updates_per_epoch
    epochs = time_s / epoch_s
    whole = min(math.floor(epochs), max_epochs)
    if whole >= 1:
        return whole * updates_per_epoch
    return math.floor(epochs * updates_per_epoch)


def epochs_factor(epochs: int, obj: Objective) -> float:
    """min(1, epochs / epochs_wanted) ** time_exponent: the score's share for the epochs bought."""
    return min(1.0, max(epochs, 0) / obj.epochs_wanted) ** obj.time_exponent


def updates_factor(updates: int | None, obj: Objective) -> float:
    """min(1, updates / updates_wanted) ** updates_exponent; 1 without a time budget."""
    if updates is None:
        return 1.0
    return min(1.0, updates / obj.updates_wanted) ** obj.updates_exponent


def settle(
    e: Evaluation,
    at_batch: Callable[[int], Evaluation],
    obj: Objective,
    *,
    fixed: bool,
    floor: int,
    min_epochs: int,
) -> Evaluation:
    """`e` at the effective batch its time budget calls for, with the reason said.

    Halves the effective batch while the updates bought stay under `updates_wanted` and
    the batch is above `floor`; a halving is kept only when it buys more updates, does
    not lower the score and does not drop the candidate under `min_epochs` it reached.
    When the time budget holds all `max_epochs` epochs it is not short: the batch stays
    (and halving stops at a batch where it does).

    Args:
        e: the candidate evaluated and timed at the target effective batch
            (`e.updates_possible` is `None` without a time budget).
        at_batch: the same candidate evaluated and timed at another effective batch.
        obj: `updates_wanted`.
        fixed: the user set the effective batch (`--effective-batch`): never lowered.
        floor: the lowest effective batch: max(`obj.min_effective_batch`, replicas).
        min_epochs: the objective's "too slow" limit.

    Returns:
        The evaluation kept, its `batch_reason` set.
    """
    target = e.target_batch
    if e.updates_possible is None:
        return dataclasses.replace(e, batch_reason=f"effective batch {target}: no time budget")
    wanted = obj.updates_wanted
    bought = f"the time budget buys {e.updates_possible} updates at effective batch {target}"
    if fixed:
        return dataclasses.replace(
            e, batch_reason=f"{bought} (wanted {wanted}); set by --effective-batch: kept"
        )
    if not e.time_bound:  # every epoch the plan may train fits: the budget is not short
        return dataclasses.replace(
            e, batch_reason=f"{bought} in all {obj.max_epochs} epochs (max_epochs): not short"
        )
    cur, tried = e, []
    while cur.time_bound and cur.updates_possible < wanted and cur.target_batch > floor:
        nxt = at_batch(max(floor, cur.target_batch // 2))
        tried.append(f"{nxt.target_batch} buys {nxt.updates_possible}")
        worse = _worse(cur, nxt, min_epochs)
        if worse:
            tried[-1] += f" (not taken: {worse})"
            break
        cur = nxt
    why = f"{bought}; " + ", ".join(tried) if tried else bought
    why += f" (wanted {wanted}"
    if not cur.time_bound:
        why += f"; all {obj.max_epochs} epochs fit at {cur.target_batch}"
    elif cur.updates_possible < wanted and cur.target_batch <= floor:
        why += f"; floor {floor}"
    return dataclasses.replace(cur, batch_reason=why + ")")


def _worse(cur: Evaluation, nxt: Evaluation, min_epochs: int) -> str:
    """Why the halved evaluation `nxt` is not taken over `cur`, or "" when it is better."""
    if nxt.verdict != "feasible" or nxt.updates_possible is None:
        return nxt.reason or nxt.verdict
    if nxt.updates_possible <= cur.updates_possible:
        return "no more updates"
    if (cur.epochs_possible or 0) >= min_epochs > (nxt.epochs_possible or 0):
        return f"{nxt.epochs_possible} epochs, under {min_epochs}"
    if nxt.score < cur.score:
        return (
            f"{nxt.epochs_possible} epochs instead of {cur.epochs_possible}, "
            f"score {nxt.score:.3f} < {cur.score:.3f}"
        )
    return ""
