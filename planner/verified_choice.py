"""The choice that goes into the plan: `search.choose`, then a verification run, stepping down.

`search.choose` predicts a micro-batch from each candidate's memory line; a choice is
only written into a plan once a child has trained it briefly as the plan
(`planner.trials.verify_run`) and `memory_model.verify` has held that run's peak to the
allowed budget, stepping down while over it. A candidate that fails verification is
dropped and the search chooses again. Under `train --auto` a time budget too short for one epoch still trains
(`choose_within_time`).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable, Sequence

from planner.build import build_plan, planned_run_peak
from planner.request import Log, PlanContext, overhead_estimate
from planner.search import candidates as cand
from planner.search import presets
from planner.search.choice import CandidateMeasurement, Choice
from planner.search.choose import choose, crops_per_epoch, estimated_note
from planner.search.memory_model import MemoryLine, VerifyStep, step_up, verify
from planner.trials import cache as trial_cache
from planner.trials.spec import TrialResult
from planner.trials.trial import measure_one
from trainer.data.splits import epoch_steps
from trainer.errors import BudgetError
from trainer.plan import accumulation_for, normalization_for
from trainer.units import gib


def choose_and_verify(
    measurements: Sequence[CandidateMeasurement],
    ctx: PlanContext,
    children: set[int],
    on_drop: Callable[[list[CandidateMeasurement], cand.Candidate], list[CandidateMeasurement]]
    | None = None,
) -> tuple[Choice, list[VerifyStep]]:
    """Choose; verify the choice with one measured run; if it fails, drop it and choose again.

    Args:
        measurements: every candidate with its trials.
        ctx: the request, budget and dataset.
        children: receives the process id of each verification child.
        on_drop: called with the measurements and the candidate that failed verification;
            returns the measurements to choose from next (`planner.make_plan` measures the
            candidates it skipped as unable to beat that one). `None` (default): as they are.

    Returns:
        `(choice, steps)`: the choice at its verified micro-batch, and the verification
        run's steps (the accepted one holds the measured peak of the whole run).
    """
    measurements = list(measurements)
    for _ in range(3):
        choice = _choose(measurements, ctx)
        c = choice.candidate
        ctx.say(
            f"chose {c.label} micro-batch {choice.micro_batch} (train step "
            f"{gib(choice.predicted_peak_bytes)}); verifying with a short training run..."
        )
        mine = next((m for m in measurements if m.candidate == c), None)
        timed = _estimated_only(mine)  # its run also times the steps for the plan
        verified, steps = _verify(choice, ctx, children, timed_steps=timed)
        if verified is not None:
            return verified, steps
        ctx.say(f"  {c.label} failed verification; choosing again without it")
        why = "failed verification: " + steps[-1].reason
        measurements = [
            dataclasses.replace(x, trials=(), pruned_reason=why) if x.candidate == c else x
            for x in measurements
        ]
        if on_drop is not None:
            measurements = on_drop(measurements, c)
    raise BudgetError("no candidate passed verification within three tries")


def time_from_verification(
    choice: Choice,
    steps: Sequence[VerifyStep],
    measurements: Sequence[CandidateMeasurement],
    ctx: PlanContext,
) -> tuple[Choice, dict | None]:
    """A choice planned from the estimate alone takes its time figures from its verification.

    Under the `--auto` cap with no room for a trial child, the chosen candidate's line is
    the analytic estimate with the CPU guess's step time (`time_bound.estimated_only`):
    off by however much this machine differs from the guess. The accepted verification
    run timed its train steps (`_timed_step_s`: the median after the first, the real
    pipeline at the plan's micro-batch). The candidate's step
    times are scaled to that and the choice is made again at the same effective batch;
    if it keeps the verified candidate, micro-batch and accumulation, its time figures
    (step and epoch time, epochs, updates, score) replace the estimate's. Otherwise, or
    with nothing timed, the choice stays as it was.

    Returns `(choice, record)`: `record` (for `evidence.planning`) says what was scaled,
    `None` when nothing was.
    """
    mine = next((m for m in measurements if m.candidate == choice.candidate), None)
    if not _estimated_only(mine) or not choice.step_time_s:
        return choice, None
    accepted = [s for s in steps if s.action == "accepted" and s.micro_batch == choice.micro_batch]
    d = accepted[-1].details if accepted else {}
    measured = _timed_step_s(d)
    if measured is None:
        return choice, None
    ratio = measured / choice.step_time_s
    note = f"scaled by {ratio:.3g} to the verification run's step time"
    scaled = dataclasses.replace(
        mine,
        trials=tuple(
            dataclasses.replace(
                r,
                step_time_s=(r.step_time_s or 0.0) * ratio,
                details={**r.details, "step_time": note},
            )
            for r in mine.trials
        ),
    )
    others = [m for m in measurements if m.candidate != choice.candidate]
    fixed = dataclasses.replace(
        ctx, request=dataclasses.replace(ctx.request, effective_batch=choice.effective_batch)
    )
    again = _choose([scaled, *others], fixed)
    if (again.candidate, again.micro_batch, again.accumulation_steps) != (
        choice.candidate,
        choice.micro_batch,
        choice.accumulation_steps,
    ):
        ctx.say("  the verification run's step time would change the choice: kept as verified")
        return choice, None
    new_eval = next(e for e in again.evaluations if e.verdict == "chosen")
    evaluations = tuple(new_eval if e.verdict == "chosen" else e for e in choice.evaluations)
    ctx.say(
        f"  step time {measured:.2f} s from the verification run (the estimate said "
        f"{choice.step_time_s:.2f} s): {again.epochs} epochs"
    )
    timed = dataclasses.replace(
        choice,
        step_time_s=again.step_time_s,
        epoch_time_s=again.epoch_time_s,
        epochs=again.epochs,
        updates=again.updates,
        score=again.score,
        evaluations=evaluations,
    )
    record = {
        "estimated_step_time_s": round(choice.step_time_s, 4),
        "verified_step_time_s": round(measured, 4),
        "ratio": round(ratio, 4),
    }
    return timed, record


def _timed_step_s(d: dict) -> float | None:
    """A verification run's seconds per train step: the median of its steps after the first
    (`train_step_s`), else its train phase over the steps after the first; `None` if none."""
    times = [float(t) for t in (d.get("train_step_s") or [])[1:]]
    if times:
        return statistics.median(times)
    n = int(d.get("micro_batches") or 0)
    train_s = (d.get("phases_s") or {}).get("train_steps_s")
    return float(train_s) / (n - 1) if n >= 2 and train_s else None


def _choose(measurements: Sequence[CandidateMeasurement], ctx: PlanContext) -> Choice:
    req = ctx.request
    return choose_within_time(
        measurements,
        budget_bytes=ctx.budget_bytes,
        headroom=ctx.step_headroom,
        # The budget that holds a train step of n bytes with the run's overhead on top.
        budget_for=lambda n: (n + overhead_estimate(ctx.budget)) / (1 - req.headroom),
        time_left=ctx.time_left,
        count_planning_time=req.count_planning_time,
        n_train_samples=ctx.n_train,
        native_hw=ctx.native_hw,
        target_effective_batch=req.target_batch,
        fixed_effective_batch=req.batch_fixed,
        replicas=ctx.replicas,
        weights=req.weights,
        device=ctx.device,
        say=ctx.say,
    )


# The child that verifies a choice trains the plan itself (planner/trials/verify_run.py).
VERIFY_TARGET = trial_cache.VERIFY_TARGET


def _estimated_only(m: CandidateMeasurement | None) -> bool:
    """Whether `m`'s line is all estimate (no trial child: `time_bound.estimated_only`)."""
    return m is not None and bool(estimated_note(m))


def _verify(
    choice: Choice, ctx: PlanContext, children: set[int], *, timed_steps: bool = False
) -> tuple[Choice | None, list[VerifyStep]]:
    """Train the choice briefly in a child, stepping down while over budget.

    The choice was made from train-step trials plus an estimate of what a run adds
    (`presets.TRAINING_OVERHEAD_BYTES`, pruning and choosing only). The verification run
    measures the whole run (`planner.trials.verify_run`), so its peak is held against
    budget x (1 - `presets.verified_headroom`) itself (room for the long-run growth),
    and a step down follows the step line shifted by that estimate through the
    measured point. Returns the verified choice (its
    `predicted_peak_bytes` stays the train step's) or `None`, and the steps taken.
    """
    req = ctx.request

    def measure(size: int) -> TrialResult:
        sized = _at_size(choice, size, ctx)
        plan = build_plan(ctx, sized, [], [], planning_time_s=0.0, children=0, traces=0)
        # Streamed: a short run would fill only part of an in-RAM cache; the cache's
        # bytes are added to the measured peak instead (planner.build).
        plan = plan.replace(data=dataclasses.replace(plan.data, cache="stream"))
        if plan.replicas > 1:  # one replica's share on one device: the micro-batch is per
            plan = plan.replace(strategy="default", replicas=1)  # replica (distributed.md)
        spec = cand.trial_spec(
            choice.candidate,
            (size,),
            num_classes=ctx.num_classes,
            device=ctx.device,
            normalization=sized.normalization,
            accumulation_steps=sized.accumulation_steps,
            target=VERIFY_TARGET,
            target_args={
                "plan": plan.to_dict(),
                # A plan from the estimate alone takes its step time from this run:
                # enough micro-batches for a median of timed steps.
                "updates": max(
                    presets.VERIFY_UPDATES,
                    math.ceil(presets.VERIFY_TIMED_MICRO_BATCHES / sized.accumulation_steps)
                    if timed_steps
                    else 0,
                ),
                "validation_batches": presets.VERIFY_VALIDATION_BATCHES,
            },
        )
        # Cached under the plan, the dataset's digest and this machine (trials/cache.py);
        # bounded by the planning time left under --auto (PlanContext.verify_timeout_s).
        r = measure_one(
            spec,
            size,
            timeout_s=ctx.verify_timeout_s(),
            memory_limit_bytes=ctx.budget_bytes,
            cache=trial_cache.for_plan(ctx.hardware, ctx.device, req.use_cache),
        )
        if r.child_pid:
            children.add(r.child_pid)
        return r

    overhead = overhead_estimate(ctx.budget, choice.candidate.backbone, choice.accumulation_steps)
    step_line = choice.line or MemoryLine(  # one measured size: step down one at a time
        a=choice.predicted_peak_bytes,
        b=0.0,
        points=((choice.micro_batch, choice.predicted_peak_bytes),),
        source="one measured size",
    )
    run_line = dataclasses.replace(
        step_line,
        a=step_line.a + overhead,
        points=tuple((m, p + overhead) for m, p in step_line.points),
        source="train-step line + estimated training overhead",
    )
    headroom = presets.verified_headroom(req.headroom)  # the bound inside the budget

    def over(size: int, r: TrialResult) -> str | None:
        """Why a measured size within the allowed bytes fails the planned run: its
        expected peak over the planned steps (`trainer.peak`) passes the budget."""
        run = planned_run_peak(ctx, _at_size(choice, size, ctx), int(r.peak_bytes or 0), r.details)
        if run is None or run[0] <= ctx.budget_bytes:
            return None
        return (
            f"expected {gib(run[0])} over the planned {run[1]} train steps > budget "
            f"{gib(ctx.budget_bytes)}"
        )

    got, _, steps = verify(
        run_line, choice.micro_batch, measure, ctx.budget_bytes, headroom, over=over
    )
    if got >= 1:
        # The trials' slope through the verified point: the refitted run line mixes the
        # estimated points with the measured one and can pass below the latter's slope.
        got, steps = _step_up(
            step_line, got, steps, measure, ctx, _target(choice, ctx), headroom, over
        )
    for s in steps:
        ctx.say(f"  verify micro-batch {s.micro_batch}: {s.action} ({s.reason})")
    if got < 1:
        return None, steps
    return _at_size(choice, got, ctx), steps


def _step_up(
    line: MemoryLine,
    got: int,
    steps: list[VerifyStep],
    measure: Callable[[int], TrialResult],
    ctx: PlanContext,
    target: int,
    headroom: float,
    over: Callable[[int, TrialResult], str | None] | None = None,
) -> tuple[int, list[VerifyStep]]:
    """One larger size when the verified run left budget unused (`memory_model.step_up`).

    The verified peak replaced the training-overhead estimate the choice was made
    with, so the headroom is now what the measured run needs: the long-run growth
    (`presets.RUN_GROWTH`) and `request.headroom`. Skipped under `train --auto` once
    planning has used its share of the time budget: a larger micro-batch is not worth
    training time. `target`: the chosen effective batch, which caps the micro-batch
    (lowered for updates, it stays lowered). `headroom`: the verification run's
    (`presets.verified_headroom`), which the larger size is held to as well.
    """
    req = ctx.request
    if req.count_planning_time and req.budget_time_s is not None:
        if ctx.elapsed() > presets.PLANNING_SHARE * req.budget_time_s:
            return got, steps
    peak = steps[-1].peak_bytes or 0
    cap = min(presets.MAX_MICRO_BATCH, math.ceil(target / ctx.replicas))
    size, _, step = step_up(
        line,
        got,
        peak,
        measure,
        ctx.budget_bytes,
        headroom,
        max_micro_batch=cap,
        use_below=presets.STEP_UP_BELOW,
        growth=presets.RUN_GROWTH,
        over=over,
    )
    if step is None:
        return got, steps
    if step.action == "accepted":  # the smaller verified run is the evidence for the step
        steps = [*steps[:-1], dataclasses.replace(steps[-1], action="stepped up")]
    return size, [*steps, step]


def _target(choice: Choice, ctx: PlanContext) -> int:
    """The effective batch `choice` accumulates to: its own (maybe lowered for updates)."""
    return choice.target_batch or ctx.request.target_batch


def _at_size(choice: Choice, size: int, ctx: PlanContext) -> Choice:
    """`choice` at micro-batch `size`: its accumulation, BatchNorm mode and step peak there,
    and its micro-batches per epoch (the run's train steps, which the expected peak's rise
    counts, `trainer.peak`) with the step time per sample kept."""
    req = ctx.request
    accum = accumulation_for(size, _target(choice, ctx), ctx.replicas)
    same = size == choice.micro_batch
    step_peak = (
        choice.predicted_peak_bytes if same or choice.line is None else choice.line.predict(size)
    )
    resized = dataclasses.replace(
        choice,
        micro_batch=size,
        accumulation_steps=accum,
        effective_batch=size * ctx.replicas * accum,
        normalization=normalization_for(size, req.weights),
        predicted_peak_bytes=int(step_peak),
    )
    if same:
        return resized
    crops = crops_per_epoch(ctx.n_train, ctx.native_hw, choice.candidate.input_size)
    return dataclasses.replace(
        resized,
        micro_batches_per_epoch=epoch_steps(crops, size * ctx.replicas, accum),
        step_time_s=choice.step_time_s * size / choice.micro_batch,
    )


def choose_within_time(
    measurements: Sequence[CandidateMeasurement],
    *,
    time_left: Callable[[], float | None],
    count_planning_time: bool,
    say: Log,
    **kw,
) -> Choice:
    """`search.choose`; under `train --auto`, a time budget too short for one epoch still trains.

    `fitplan plan` fails fast when no candidate trains one epoch in the time budget. Under
    `--auto` planning has already spent part of that budget when this is known, so
    failing would waste it: train the candidate with the shortest epoch instead, for one
    (partial) epoch that the trainer's time limit cuts short and validates. A memory
    budget that nothing fits still fails.

    Args:
        measurements: every candidate with its trials.
        time_left: training time left now (`None`: no time budget).
        count_planning_time: `train --auto`: fall back to the shortest epoch.
        say: receives the fallback's warning.
        **kw: passed to `search.choose`.
    """
    try:
        return choose(measurements, time_budget_s=time_left(), **kw)
    except BudgetError as exc:
        left = time_left()
        if not count_planning_time or left is None or "time budget" not in str(exc):
            raise
    return _fastest_for_one_epoch(measurements, max(left, 0), say, **kw)


def _fastest_for_one_epoch(
    measurements: Sequence[CandidateMeasurement], left: float, say: Log, **kw
) -> Choice:
    """The candidate with the shortest epoch, for one epoch; every other one too slow."""
    # Without a time budget every candidate that fits in memory is feasible: take the fastest.
    untimed = choose(measurements, time_budget_s=None, **kw)
    fits = [e for e in untimed.evaluations if e.verdict in ("chosen", "feasible")]
    fastest = min(fits, key=lambda e: e.epoch_time_s).candidate
    only = [m for m in measurements if m.candidate == fastest]
    # Its updates are counted in the time left: a partial epoch buys few, so the
    # effective batch may be lowered (planner.search.updates).
    choice = choose(only, time_budget_s=None, updates_time_s=left, **kw)
    mine = next(e for e in choice.evaluations if e.verdict == "chosen")
    note = (
        f"no candidate trains one epoch in the {left:.0f} s left after planning; "
        f"training the fastest, {fastest.label} ({choice.epoch_time_s:.0f} s per epoch), "
        "until the time limit"
    )
    say("warning: " + note)
    evals = []
    for e in untimed.evaluations:
        if e.candidate == fastest:
            e = dataclasses.replace(mine, reason="the shortest epoch: " + note)
        elif e.verdict in ("chosen", "feasible"):
            why = f"too slow: {e.epoch_time_s:.0f} s per epoch, {left:.0f} s left"
            e = dataclasses.replace(e, verdict="rejected", reason=why)
        evals.append(e)
    return dataclasses.replace(
        choice, epochs=1, evaluations=tuple(evals), warnings=(note, *choice.warnings)
    )
