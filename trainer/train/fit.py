"""Execute a plan: `train(plan, out)` and `resume(out)`.

Keras does the work: `model.fit`, the optimizer's `gradient_accumulation_steps`,
`ReduceLROnPlateau`, `EarlyStopping(restore_best_weights=True)` and
`keras.mixed_precision`. This module orders it: validate inputs before anything
is written, then freeze-then-fine-tune phases, atomic bounded checkpoints, a wall
time limit, resume after a kill, and a step-down of the micro-batch when a step
runs out of memory (accumulation doubles, so the effective batch is kept).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from trainer.errors import DataError
from trainer.oom import is_oom_error
from trainer.peak import expected_peak_bytes, planned_steps
from trainer.plan import Plan, load_plan
from trainer.train import stepdown
from trainer.train.callbacks import (
    MemoryGuard,
    ReleaseFreeHeap,
    RunCheckpointer,
    Throughput,
    WallClock,
)
from trainer.train.distribute import (
    get_strategy,
    learning_rate_for,
    shard_datasets,
    strategy_for_run,
    time_limit_for,
    worker_dir,
)
from trainer.train.distribute_keras import build_from_spec
from trainer.train.memory import configure_malloc, current_rss_bytes
from trainer.train.preflight import GpuSetup, prepare_device, warn_plan_mismatch
from trainer.train.run_dir import RunDir
from trainer.train.schedule import deadline_schedule, schedule_kind, stopping_callbacks
from trainer.train.setup import build_model_for_plan, compile_model
from trainer.train.time_account import TimeAccount
from trainer.train.tracking import (
    EpochLog,
    print_progress,
    run_log,
    run_summary,
    start_line,
    tensorboard_callback,
)
from trainer.train.tracking import log as run_logger
from trainer.units import gib

# build_model_for_plan is re-exported: the planner's dry runs build the model as training does.
__all__ = ["TrainResult", "build_model_for_plan", "resume", "train"]


@dataclass
class TrainResult:
    """What a finished run left: its folder, final metrics and the model (best weights)."""

    run_dir: Path
    metrics: dict[str, Any]
    model: keras.Model
    plan: Plan


def train(
    plan: Plan,
    out: str | Path,
    *,
    data_path: str | None = None,
    val_path: str | None = None,
    max_epochs: int | None = None,
    max_steps: int | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    started_at: float | None = None,
    step_down: bool = True,
    progress: bool = False,
    spent_before: Mapping[str, float] | None = None,
    origin: str | None = None,
) -> TrainResult:
    """Train `plan` into the new run folder `out`.

    Args:
        plan: a validated plan.
        out: run folder; must not already hold a run.
        data_path, val_path: override `plan.data.path` / `plan.data.val`.
        max_epochs: override `plan.epochs` (recorded in the run's plan.json).
        max_steps: cap micro-batches per epoch (quick runs; recorded likewise).
        callbacks: extra Keras callbacks (e.g. a progress display, `--callbacks`).
        started_at: `time.monotonic()` when the user's time budget started
            (`--auto` counts planning time); defaults to now.
        step_down: on out of memory, halve the micro-batch and go on (default); `False`
            re-raises it (the planner's verification run measures one size).
        progress: print each epoch's line on stdout (notebooks). Defaults to `False`:
            the lines go to `RUN/train.log` and the `fitplan` logger only.
        spent_before: seconds spent before this call inside the time budget, by name
            (`--auto`: `{"startup_s": ..., "planning_s": ...}`), for `time_account`.
        origin: what `started_at` is ("command start"); defaults to "train call", or
            "given" when `started_at` is given.

    Every run folder also gets TensorBoard event files (`RUN/tensorboard`) and the
    software versions in `metrics.json` (`trainer.train.tracking`, docs/runs.md).
    """
    called_at = time.monotonic()
    origin = origin or ("train call" if started_at is None else "given")
    started_at = called_at if started_at is None else started_at
    account = TimeAccount(started_at, called_at, spent_before, origin)
    callbacks = [*callbacks, account]  # metrics.json `time_account` (_fit_phases)
    configure_malloc()  # no-op if the command line or a child already did (docs/runs.md)
    plan = _apply_overrides(plan, data_path, val_path, max_epochs, max_steps)
    gpu = prepare_device(plan)  # pin the GPU, read its free memory, limit it: before TF maps it
    strategy = get_strategy(plan)  # before any TF op: multi-worker must configure first
    _check_weights(plan)
    bundle = _datasets(plan)  # reads the data before anything is written
    warn_plan_mismatch(plan, gpu)
    with worker_dir(out, strategy) as folder:  # only the chief writes `out`
        run = RunDir.create(folder, plan)
        try:
            with run_log(run.path), print_progress(progress):
                run_logger.info(start_line(plan, run.path, bundle))
                result = _train_with_stepdown(
                    run, plan, bundle, None, callbacks, started_at, step_down=step_down
                )
        except BaseException:
            run.remove_if_no_epoch()
            raise
    result.run_dir = Path(out)
    return result


def resume(
    out: str | Path,
    *,
    data_path: str | None = None,
    val_path: str | None = None,
    max_epochs: int | None = None,
    max_steps: int | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    progress: bool = False,
) -> TrainResult:
    """Continue the run in `out` from its last completed epoch, optimizer state included.

    Args:
        out: the run folder.
        data_path, val_path: override the run's `data.path` / `data.val`.
        max_epochs: a new last epoch (to extend a finished run); recorded in its plan.json.
        max_steps: a new cap on optimizer updates per epoch; recorded likewise.
        callbacks, progress: as for `train`.
    """
    configure_malloc()
    gpu = _prepare_device_for_run(out)  # as in train(): before TF maps a GPU
    strategy = strategy_for_run(out)  # before any TF op, as in train()
    with worker_dir(out, strategy, resume=True) as folder:
        run, plan, state = RunDir.open_for_resume(folder)
        plan = _apply_overrides(plan, data_path, val_path, max_epochs, max_steps)
        _check_weights(plan)
        bundle = _datasets(plan)
        warn_plan_mismatch(plan, gpu)
        elapsed = float(state.get("wall_time_s", 0.0)) if state else 0.0
        started_at = time.monotonic() - elapsed
        account = TimeAccount(started_at, time.monotonic(), None, "resumed run's first start")
        callbacks = [*callbacks, account]
        if max_epochs is not None or max_steps is not None:
            run.save_plan(plan)  # the run's plan.json says what it now runs to
        with run_log(run.path), print_progress(progress):
            run_logger.info(
                f"resuming {run.path} after epoch {int((state or {}).get('epochs_done', 0))}"
            )
            result = _train_with_stepdown(run, plan, bundle, state, callbacks, started_at)
    result.run_dir = Path(out)
    return result


# -- internals -----------------------------------------------------------------


def _apply_overrides(plan, data_path, val_path, max_epochs, max_steps) -> Plan:
    data = plan.data
    if data_path is not None:
        data = dataclasses.replace(data, path=str(data_path))
    if val_path is not None:
        data = dataclasses.replace(data, val=str(val_path))
    changes: dict[str, Any] = {"data": data}
    if max_epochs is not None:
        changes["epochs"] = max_epochs
    if max_steps is not None:
        changes["steps_per_epoch"] = max_steps
    return plan.replace(**changes)


def _prepare_device_for_run(out: str | Path) -> GpuSetup | None:
    """`prepare_device` for the plan in a run folder (`None` without one: resume says why)."""
    path = Path(out) / "plan.json"
    return prepare_device(load_plan(path)) if path.is_file() else None


def _check_weights(plan: Plan) -> None:
    from trainer.models import resolve_weights

    resolve_weights(plan.backbone, plan.weights)  # WeightsError before any work


def _datasets(plan: Plan):
    from trainer.data.pipeline import build_datasets

    return shard_datasets(build_datasets(plan))  # each worker keeps its share of a batch


def _steps(plan: Plan, bundle) -> int:
    # Micro-batches per epoch; the data module already applied plan.steps_per_epoch
    # (in optimizer updates) and rounded to whole updates.
    return bundle.steps_per_epoch


def _train_with_stepdown(
    run, plan, bundle, state, callbacks, started_at, step_down=True
) -> TrainResult:
    """Run the plan; on out of memory halve the micro-batch (`trainer.train.stepdown`).

    On a GPU the step-down is recorded and `RestartRequired` raised: the run continues
    in a fresh process (`fitplan train` does it). On a CPU it continues here, its peak
    measured from a fresh baseline.
    """
    adjustments: list[dict[str, Any]] = list((state or {}).get("adjustments", []))
    while True:
        try:
            return _run(run, plan, bundle, state, callbacks, started_at, adjustments)
        except Exception as exc:
            if not is_oom_error(exc):
                _raise_if_a_file_is_bad(exc, run, bundle)
                raise
            if not step_down:
                raise
            plan, record = stepdown.next_plan(plan, exc)
            adjustments.append(record)
            if stepdown.restart_needed():
                stepdown.record_for_restart(run, plan, adjustments)
                raise stepdown.RestartRequired(
                    stepdown.restart_message(run.path, record),
                    run.path,
                    hint=f"continue with `fitplan train --resume {run.path}`",
                ) from exc
            run.save_plan(plan)
            stepdown.fresh_baseline()  # metrics.json must not include the failed attempt
            bundle = _datasets(plan)
            state = run.read_state()
            if state is not None:
                state["adjustments"] = adjustments


def _raise_if_a_file_is_bad(exc: Exception, run: RunDir, bundle) -> None:
    """A file that passed the start-up checks but fails to decode mid-epoch: name it.

    TensorFlow's error names a graph node, not the file; decoding every pair again
    (only after such a failure) finds it. Nothing found: the original error stands.
    """
    import tensorflow as tf

    if not isinstance(exc, tf.errors.OpError):
        return
    from trainer.data.integrity import find_undecodable

    bad = find_undecodable([*bundle.train_pairs, *bundle.val_pairs])
    if not bad:
        return
    more = f" (and {len(bad) - 1} more files)" if len(bad) > 1 else ""
    resume = f"continue with `fitplan train --resume {run.path}`"
    raise DataError(
        f"{bad[0][0]}: cannot be decoded ({bad[0][1]}){more}",
        hint="fix or remove it, then " + (resume if run.state_path.exists() else "train again"),
    ) from exc


def _host_budget(plan: Plan) -> int | None:
    """The host-RAM budget the memory guard enforces: a CPU plan's budget, a GPU plan's
    `target.host_budget_bytes` (the GPU raises its own OOM; host RAM does not)."""
    if plan.target.device == "gpu":
        return plan.target.host_budget_bytes
    return plan.target.budget_bytes


def _phases(plan: Plan) -> list[tuple[str, int, int, float]]:
    lr = learning_rate_for(plan)  # optimizer.lr_scaling applied (docs/distributed.md)
    freeze = min(plan.freeze_encoder_epochs, plan.epochs)
    phases = []
    if freeze > 0:
        phases.append(("frozen", 0, freeze, lr))
        lr *= plan.finetune_lr_factor
    if plan.epochs > freeze:
        phases.append(("finetune", freeze, plan.epochs, lr))
    return phases


def _monitor(plan: Plan, has_val: bool) -> tuple[str, str]:
    name = plan.early_stopping.monitor
    if not has_val:
        name = name.removeprefix("val_")
    return name, ("max" if name.endswith("dice") else "min")


def _run(run, plan, bundle, state, callbacks, started_at, adjustments) -> TrainResult:
    strategy = get_strategy(plan)
    model = build_model_for_plan(
        plan, bundle.num_classes, compile=False, strategy=strategy, output="logits"
    )
    build_from_spec(model, strategy, bundle.train.element_spec)  # keras-team/keras#20585
    with strategy.scope():  # optimizers (compile) must be created in the scope too
        return _fit_phases(run, plan, bundle, state, callbacks, started_at, adjustments, model)


def run_prediction(
    plan: Plan,
    steps: int,
    done: int,
    deadline: float | None,
    *,
    after_planning: bool = False,
    rss: Callable[[], int | None] = current_rss_bytes,
) -> dict[str, Any]:
    """The expected peak of the run about to start (`trainer.peak`): the epochs left
    (`--max-epochs` included), fewer when the time left ends it first at the plan's epoch
    time. A resumed run counts from its resume: a new process starts a new pool.

    `after_planning`: training runs in the process that planned (`train --auto`), which
    holds what planning left (about 50-60 MiB under `fitplan demo`, docs/planning.md).
    Every run records its resident set here, with the model built and before the first
    step (`start_rss_bytes`); the verification child's is in the plan
    (`growth.start_rss_bytes`), and what this process holds beyond it is added, as
    `planning_process_bytes`. (A peak would not do: the child's peak so far includes
    TensorFlow's start-up transients, which the current resident set does not.)
    """
    prediction = plan.prediction or {}
    time_left = None if deadline is None else max(0.0, deadline - time.monotonic())
    n = planned_steps(max(0, plan.epochs - done), steps, prediction.get("epoch_time_s"), time_left)
    expected = expected_peak_bytes(prediction, n)
    now = rss()
    extra = None
    child = (prediction.get("growth") or {}).get("start_rss_bytes")
    if after_planning and child and now and expected is not None:
        extra = max(0, int(now) - int(child))
        expected += extra
    return {
        "predicted_peak_bytes": expected,
        "predicted_steps": n,
        "planning_process_bytes": extra,
        "start_rss_bytes": now,
        "plan_predicted_peak_bytes": prediction.get("peak_bytes"),
        "plan_predicted_steps": prediction.get("planned_steps"),
    }


def expected_peak_line(expected: dict[str, Any]) -> str:
    """The log line saying what peak the run is expected to reach, and the plan's."""
    line = (
        f"expected peak {gib(expected['predicted_peak_bytes'])} over "
        f"{expected['predicted_steps']} train steps"
    )
    plan_steps = expected.get("plan_predicted_steps")
    if plan_steps and plan_steps != expected["predicted_steps"]:
        line += f" (the plan's {plan_steps} steps: {gib(expected['plan_predicted_peak_bytes'])})"
    return line


def _fit_phases(run, plan, bundle, state, callbacks, started_at, adjustments, model):
    from trainer.models import set_encoder_trainable

    num_classes = bundle.num_classes
    steps = _steps(plan, bundle)
    train_ds = bundle.train.repeat()
    has_val = bundle.val is not None
    monitor, mode = _monitor(plan, has_val)
    state = dict(state or {"history": []})
    state["adjustments"] = adjustments
    done = int(state.get("epochs_done", 0))
    phases = _phases(plan)
    pretrained = plan.weights != "none"  # its encoder BatchNorm stays frozen (finetune.py)

    if done > 0:  # restore weights + optimizer in the configuration they were saved in
        saved_phase = state.get("phase", phases[-1][0])
        set_encoder_trainable(
            model, saved_phase != "frozen", plan.resolved_normalization, pretrained=pretrained
        )
        lr = next((p[3] for p in phases if p[0] == saved_phase), phases[-1][3])
        compile_model(model, plan, num_classes, lr)
        model.optimizer.build(model.trainable_variables)
        src = run.path / state["last_weights"] if state.get("last_weights") else run.best_path
        model.load_weights(str(src))

    throughput = Throughput(bundle.batch_size)  # images per step: micro_batch x replicas
    guard = MemoryGuard(_host_budget(plan))
    deadline = started_at + plan.time_limit_s if plan.time_limit_s else None
    account = next((c for c in callbacks if isinstance(c, TimeAccount)), None)  # metrics too
    after_planning = account is not None and "planning_s" in account.before_training
    expected = run_prediction(plan, steps, done, deadline, after_planning=after_planning)
    if expected["predicted_peak_bytes"] is not None:
        run_logger.info(expected_peak_line(expected))
    # Agreed across workers (docs/distributed.md); stops early enough for the last
    # validation pass and checkpoint to end by the deadline (callbacks.TimeLimit).
    stopped_by = "epochs"
    t0 = time.monotonic() - float(state.get("wall_time_s", 0.0))
    lr_deadline = deadline_schedule(plan, t0, deadline, bundle.val_steps)  # None: plateau
    # One clock: the deadline schedule is itself a TimeLimit (it stops where its rate
    # reaches 0); plan validation keeps it to single-worker runs, so nothing to agree on.
    time_limit = lr_deadline or time_limit_for(
        deadline, accumulation_steps=plan.accumulation_steps, val_batches=bundle.val_steps
    )
    would_stop = None
    for name, start, end, lr in phases:
        if end <= done:
            continue
        resumed_here = done > start
        set_encoder_trainable(
            model, name != "frozen", plan.resolved_normalization, pretrained=pretrained
        )
        if not (resumed_here and state.get("phase") == name):
            compile_model(model, plan, num_classes, lr)  # a fresh optimizer for a new phase
        es, rlrop = stopping_callbacks(plan, monitor, mode, has_val, lr_deadline is not None)
        if lr_deadline is not None:
            lr_deadline.set_base_lr(lr)  # the deadline schedule replaces rlrop
        ckpt = RunCheckpointer(
            run,
            monitor,
            mode,
            keep_last=plan.checkpoints.keep == "best_and_last",
            max_bytes=plan.checkpoints.max_bytes,
            state=state,
            watched={"early_stopping": es, "lr_schedule": rlrop},
            phase=name,
        )
        wall = WallClock(state, t0)
        model.fit(
            train_ds,
            validation_data=bundle.val,
            epochs=end,
            initial_epoch=max(done, start),
            steps_per_epoch=steps,
            shuffle=False,  # the tf.data pipeline shuffles (seeded); Keras cannot
            verbose=0,
            callbacks=[
                ReleaseFreeHeap(),
                throughput,  # puts images_per_s and peak_memory_bytes in the epoch's logs
                tensorboard_callback(run.path),  # so TensorBoard writes them (tracking.py)
                EpochLog(plan.epochs, deadline),  # the LR used this epoch: before rlrop
                rlrop if lr_deadline is None else lr_deadline,  # also the time limit
                es,
                wall,
                ckpt,
                *([time_limit] if lr_deadline is None else []),
                guard,
                *callbacks,
            ],
        )
        done = int(state.get("epochs_done", done))
        if time_limit.triggered:
            stopped_by = "time_limit"
            break
        if name != "frozen":
            would_stop = getattr(es, "would_stop_epoch", None) or would_stop
        if es.stopped_epoch > 0 and name != "frozen":
            stopped_by = "early_stopping"
            break

    if run.best_path.exists():
        with warnings.catch_warnings():  # optimizer slots of another phase: irrelevant here
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model.load_weights(str(run.best_path))
    metrics = run_summary(plan, bundle, state, throughput, stopped_by, steps, monitor)
    metrics.update(expected)  # the prediction for this run's length (trainer/peak.py)
    metrics["lr_schedule"] = schedule_kind(plan)
    # Updates made in this process (a resumed run counts from its resume).
    metrics["optimizer_updates"] = time_limit.micro_batches // time_limit.k
    if lr_deadline is not None:  # when plateau early stopping would have ended it
        metrics["early_stopping_would_stop_epoch"] = would_stop
    if account is not None:  # where the budget's time went (time_account.py)
        metrics["time_account"] = account.summary(plan.time_limit_s)
    run.write_metrics(metrics)
    from trainer.models import with_probabilities

    # Trained on logits (the loss takes them); callers get probabilities, as inference does.
    return TrainResult(run.path, metrics, with_probabilities(model), plan)
