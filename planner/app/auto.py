"""`fitplan train --auto`: probe, scan, plan and train in one call, planning inside the time budget."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from planner.make_plan import Log, PlanResult, make_plan
from planner.search import presets


def auto_train(
    data: str | Path,
    out: str | Path,
    *,
    val: str | Path | None = None,
    callbacks: Sequence[Any] | Callable[[], Sequence[Any]] = (),
    log: Log | None = None,
    max_epochs: int | None = None,
    max_steps: int | None = None,
    adjust: Callable[[Any], Any] | None = None,
    progress: bool = False,
    started_at: float | None = None,
    **plan_options: Any,
) -> tuple[PlanResult, Any]:
    """Make a plan for `data` and train it into the run folder `out`.

    The time budget (`budget_time_s`) counts from `started_at` (the command line passes
    the process's start, so imports count too; from Python it defaults to this call):
    the plan's `time_limit_s` is the whole budget and training's clock starts there, so
    planning time is taken out of training time, and the run's `metrics.json`
    `time_account` says where the time went (`trainer.train.time_account`). Planning is capped at
    `presets.AUTO_PLANNING_SHARE` of it (10 minutes -> 60 s; `planner.measure_order`
    says what it skipped to stay inside). The plan is saved in the run folder.

    Args:
        data: dataset root.
        out: run folder to create.
        val: separate validation root, or `None`.
        callbacks: extra Keras callbacks for training (a progress display), or a function
            that makes them, called once planning is done (so that planning runs without
            Keras imported).
        log: receives planning progress lines.
        max_epochs, max_steps: as `fitplan train --max-epochs/--max-steps` (recorded in
            the run's plan.json).
        adjust: changes the made plan before training (`--set KEY=VALUE`), or `None`.
        progress: print the epoch lines on stdout (`trainer.train.fit.train`).
        started_at: `time.monotonic()` value the budget counts from, or `None` (now).
        **plan_options: passed to `planner.make_plan.make_plan`.

    Returns:
        `(plan_result, train_result)`.
    """
    called = time.monotonic()
    started = called if started_at is None else min(started_at, called)
    result = make_plan(data, val=val, count_planning_time=True, log=log, **plan_options)
    if log:
        cap = (result.plan.evidence or {}).get("planning", {}).get("cap_s")
        share = presets.AUTO_PLANNING_SHARE
        of_cap = f" (cap {cap:.0f} s: {share:.0%} of the time budget)" if cap else ""
        log(
            f"planning took {result.planning_time_s:.0f} s{of_cap} "
            f"with {result.children} child processes"
        )
    rss = _release_planning_memory()
    if log and rss:
        log(f"the planning process holds {rss / 2**20:.0f} MiB before training starts in it")
    planned = adjust(result.plan) if adjust is not None else result.plan
    if callable(callbacks):
        callbacks = callbacks()
    # Only now: the trainer imports TensorFlow (~0.5 GiB resident), which planning, whose
    # children measure in processes of their own, never needs.
    from trainer.train.fit import train

    trained = train(
        planned,
        out,
        callbacks=callbacks,
        started_at=started,
        max_epochs=max_epochs,
        max_steps=max_steps,
        progress=progress,
        spent_before={"startup_s": called - started, "planning_s": result.planning_time_s},
        origin="command start" if started_at is not None else "auto_train call",
    )
    return result, trained


def _release_planning_memory() -> int | None:
    """Free what planning left behind before training starts in this process; its RSS.

    Training runs in the planning process (the parent never imported TensorFlow, so
    nothing of a trial is here), and the plan's peak was measured in a fresh child: what
    planning still holds (the scan's decoded images, freed but kept by malloc) would
    come on top. A collection and `malloc_trim(0)` give it back to the kernel.
    """
    import gc

    from trainer.train.memory import release_free_heap

    gc.collect()
    release_free_heap()
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # noqa: BLE001 - psutil unreadable: nothing to report
        return None
