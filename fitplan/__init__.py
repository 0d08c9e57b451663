"""fitplan from Python (notebooks, scripts): plan, train, resume, evaluate.

    import fitplan
    plan = fitplan.plan("data/", budget_memory="4GiB", budget_time="20m")
    result = fitplan.train(plan, "runs/r1", max_epochs=3)
    print(result.metrics["best_val_dice"])

Each function is the library call the matching `fitplan` command makes (docs/cli.md),
with the command line's units accepted (`"4GiB"`, `"20m"`) and progress printed on
stdout by default (`progress=False`: quiet). `trainer` stays free of `planner`: this
facade is the one place that joins them for a Python user.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainer import FitplanError, Plan, __version__, load_plan

__all__ = [
    "FitplanError",
    "Plan",
    "__version__",
    "evaluate",
    "load_plan",
    "plan",
    "resume",
    "train",
]


def plan(
    data: str | Path,
    *,
    budget_memory: int | str | None = None,
    budget_time: float | str | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    **options: Any,
) -> Plan:
    """Measure this machine on `data` and return the plan that fits (`fitplan plan`).

    Args:
        data: dataset root with `images/` and `masks/` (or `images=`, `masks=`).
        budget_memory: bytes, or a size such as `"4GiB"`; `None`: the probe's budget.
        budget_time: seconds, or a duration such as `"20m"`; `None`: no time limit.
        out: also write the plan file here.
        progress: print the planning stages on stdout. Defaults to `True`.
        **options: `planner.make_plan.make_plan`'s other arguments (`backbones`, `sizes`,
            `precisions`, `weights`, `headroom`, `effective_batch`, `val`, ...).

    Returns:
        The validated `Plan` (save it with `fitplan.Plan.to_dict` or `trainer.save_plan`).
    """
    from planner.app.units import parse_bytes, parse_duration
    from planner.make_plan import make_plan

    if isinstance(budget_memory, str):
        budget_memory = parse_bytes(budget_memory, "budget_memory")
    if isinstance(budget_time, str):
        budget_time = parse_duration(budget_time, "budget_time")
    result = make_plan(
        data,
        budget_memory=budget_memory,
        budget_time_s=budget_time,
        out=out,
        log=print if progress else None,
        **options,
    )
    return result.plan


def train(
    plan: Plan | str | Path,
    out: str | Path | None = None,
    *,
    max_epochs: int | None = None,
    max_steps: int | None = None,
    callbacks: Sequence[Any] = (),
    progress: bool = True,
    **options: Any,
) -> Any:
    """Train `plan` into a new run folder (`fitplan train --plan P --out-dir RUN`).

    Args:
        plan: a `Plan` or the path of a plan file.
        out: the run folder to create. `None`: `runs/run-YYYYmmdd-HHMMSS`.
        max_epochs, max_steps: as `--max-epochs` / `--max-steps`.
        callbacks: extra Keras callbacks.
        progress: print one line per epoch on stdout (loss, Dice, learning rate,
            images/s, peak memory, ETA). Defaults to `True`; `train.log` has them anyway.
        **options: `trainer.train.fit.train`'s other arguments (`data_path`, `val_path`).

    Returns:
        `trainer.train.fit.TrainResult`: `run_dir`, `metrics`, `model` (best weights), `plan`.
    """
    from trainer.train.fit import train as fit_train

    if not isinstance(plan, Plan):
        plan = load_plan(plan)
    if out is None:
        out = Path("runs") / time.strftime("run-%Y%m%d-%H%M%S")
    return fit_train(
        plan,
        out,
        max_epochs=max_epochs,
        max_steps=max_steps,
        callbacks=callbacks,
        progress=progress,
        **options,
    )


def resume(run: str | Path, *, progress: bool = True, **options: Any) -> Any:
    """Continue the run in `run` (`fitplan train --resume RUN`); `max_epochs=` extends it."""
    from trainer.train.fit import resume as fit_resume

    return fit_resume(run, progress=progress, **options)


def evaluate(run: str | Path, data: str | Path, **options: Any) -> dict[str, Any]:
    """Dice, IoU, precision and recall per class of `run` on `data` (`fitplan evaluate`)."""
    from trainer.use.evaluate import evaluate as evaluate_run

    return evaluate_run(run, data, **options)
