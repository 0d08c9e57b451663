"""Stepping the micro-batch down after a training step ran out of memory.

The micro-batch halves and accumulation grows so the effective batch is kept
(`trainer.plan.accumulation_for`); `plan.json` is rewritten and the step-down is recorded
in the run's `adjustments`. Where the run goes on depends on the device:

- **GPU: in a fresh process.** After an out-of-memory error TensorFlow's GPU allocator
  keeps its pool and fragmentation, cuDNN may have lost its handles, and under
  `MirroredStrategy` the NCCL collectives may be left half-done; none of it can be reset
  from Python. So the run records the step-down in `state.json` (with no finished epoch
  too: resume then starts from scratch at the smaller size) and raises
  `RestartRequired`; `fitplan train` then replaces its process with
  `fitplan train --resume RUN` (`os.execv`), which continues from the last checkpoint
  at the smaller micro-batch with a fresh allocator (and so a fresh peak).
- **CPU: in this process.** Host memory is given back (`malloc_trim`) and the kernel's
  peak mark is reset, so the peak in `metrics.json` is measured from a fresh baseline and
  does not include the failed attempt.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from trainer.atomic import write_json
from trainer.errors import FitplanWarning, TrainingOOMError
from trainer.plan import Plan, accumulation_for


class RestartRequired(TrainingOOMError):
    """A GPU step-down was recorded; the run continues with `fitplan train --resume RUN`.

    Attributes:
        run_path: the run folder to resume.
    """

    def __init__(self, message: str, run_path: Path, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.run_path = Path(run_path)


def next_plan(plan: Plan, exc: BaseException) -> tuple[Plan, dict[str, Any]]:
    """The plan one step down (micro-batch halved, effective batch kept) and its record.

    Raises:
        TrainingOOMError: at micro-batch 1, nothing smaller to try.
    """
    what = f"{type(exc).__name__}: {exc}"
    if plan.micro_batch == 1:
        raise TrainingOOMError(
            f"out of memory at micro_batch=1 ({what}); nothing smaller to try",
            hint="choose a smaller input_size or backbone (`fitplan plan` measures them)",
        ) from exc
    new_mb = plan.micro_batch // 2
    new_k = accumulation_for(new_mb, plan.effective_batch, plan.replicas)
    record = {
        "reason": f"out of memory at micro_batch={plan.micro_batch}: {what}",
        "micro_batch": [plan.micro_batch, new_mb],
        "accumulation_steps": [plan.accumulation_steps, new_k],
    }
    warnings.warn(f"stepping down: {record['reason']}", FitplanWarning, stacklevel=3)
    return plan.replace(micro_batch=new_mb, accumulation_steps=new_k), record


def restart_needed() -> bool:
    """Whether a step-down must continue in a fresh process: TensorFlow uses a GPU here."""
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def fresh_baseline() -> None:
    """Give freed host memory back and restart the peak-RSS mark (CPU, in-process)."""
    from trainer.train.memory import release_free_heap, reset_peak_rss

    release_free_heap()
    reset_peak_rss()


def record_for_restart(run: Any, plan: Plan, adjustments: list[dict[str, Any]]) -> None:
    """Write the smaller plan and the adjustments so `resume` continues from there.

    The state on disk is the last committed epoch's (the failed epoch never committed);
    without one, a state with no finished epoch keeps the adjustments and the folder.
    """
    run.save_plan(plan)
    state = run.read_state() or {"epochs_done": 0, "history": []}
    state.pop("version", None)
    state["adjustments"] = adjustments
    write_json(run.state_path, {"version": 1, **state})


def restart_message(run_path: Path, record: dict[str, Any]) -> str:
    mb = record["micro_batch"]
    return (
        f"{record['reason']}; stepped down to micro_batch={mb[1]} "
        f"(accumulation_steps={record['accumulation_steps'][1]}); on a GPU the run goes on in "
        f"a fresh process from its last checkpoint"
    )


__all__ = [
    "RestartRequired",
    "fresh_baseline",
    "next_plan",
    "record_for_restart",
    "restart_message",
    "restart_needed",
]
