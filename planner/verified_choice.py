"""The choice that goes into the plan: `search.choose`, then one verification child, stepping down.

`search.choose` predicts a micro-batch from each candidate's memory line; a prediction
is only written into a plan once a child has measured it (`memory_model.verify`: measure
the chosen size in the plan's own BatchNorm mode, refit and step down while over the
allowed budget). A candidate that fails verification is dropped and the search chooses
again. Under `train --auto` a time budget too short for one epoch still trains
(`choose_within_time`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from planner.request import Log, PlanContext
from planner.search import candidates as cand
from planner.search import presets
from planner.search.choice import CandidateMeasurement, Choice
from planner.search.choose import accumulation_for, choose
from planner.search.memory_model import VerifyStep, verify
from planner.trials.spec import TrialResult
from planner.trials.trial import measure_one
from trainer.errors import BudgetError
from trainer.plan import normalization_for
from trainer.units import gib


def choose_and_verify(
    measurements: Sequence[CandidateMeasurement], ctx: PlanContext, children: set[int]
) -> tuple[Choice, list[VerifyStep]]:
    """Choose; verify the choice with one measured run; if it fails, drop it and choose again.

    Args:
        measurements: every candidate with its trials.
        ctx: the request, budget and dataset.
        children: receives the process id of each verification child.

    Returns:
        `(choice, steps)`: the choice with its verified micro-batch and measured peak, and
        the verification's steps (empty when a trial measured the chosen size directly).
    """
    measurements = list(measurements)
    for _ in range(3):
        choice = _choose(measurements, ctx)
        c, mb = choice.candidate, choice.micro_batch
        m = next(x for x in measurements if x.candidate == c)
        measured = {r.micro_batch for r in m.trials if r.ok}
        # A size the trial measured as the plan will run it (its BatchNorm mode, and no
        # accumulation: trials step at accumulation 1) needs no second child.
        same_mode = m.normalization in (None, choice.normalization)
        as_planned = mb in measured and same_mode and choice.accumulation_steps == 1
        if as_planned or choice.line is None:
            ctx.say(f"chose {c.label} micro-batch {mb}: measured directly, no verification needed")
            return choice, []
        ctx.say(
            f"chose {c.label} micro-batch {mb} (predicted {gib(choice.predicted_peak_bytes)}); "
            "verifying..."
        )
        verified, steps = _verify(choice, ctx, children)
        if verified is not None:
            return verified, steps
        ctx.say(f"  {c.label} failed verification; choosing again without it")
        why = "failed verification: " + steps[-1].reason
        measurements = [
            dataclasses.replace(x, trials=(), pruned_reason=why) if x.candidate == c else x
            for x in measurements
        ]
    raise BudgetError("no candidate passed verification within three tries")


def _choose(measurements: Sequence[CandidateMeasurement], ctx: PlanContext) -> Choice:
    req = ctx.request
    return choose_within_time(
        measurements,
        budget_bytes=ctx.budget_bytes,
        headroom=ctx.step_headroom,
        time_left=ctx.time_left,
        count_planning_time=req.count_planning_time,
        n_train_samples=ctx.n_train,
        native_hw=ctx.native_hw,
        target_effective_batch=req.effective_batch,
        replicas=ctx.replicas,
        weights=req.weights,
        say=ctx.say,
    )


def _verify(
    choice: Choice, ctx: PlanContext, children: set[int]
) -> tuple[Choice | None, list[VerifyStep]]:
    """Measure the choice (stepping down while over budget): the verified choice, or `None`."""
    req = ctx.request

    def measure(size: int) -> TrialResult:
        # Each size as the plan would run it: its BatchNorm mode at that size (it can
        # change when verification steps down across SMALL_MICRO_BATCH) and its gradient
        # accumulation (Keras keeps one float32 accumulator per trainable variable), over
        # at least two optimizer updates.
        accum = accumulation_for(size, req.effective_batch, ctx.replicas)
        spec = cand.trial_spec(
            choice.candidate,
            num_classes=ctx.num_classes,
            device=ctx.device,
            normalization=normalization_for(size, req.weights),
            accumulation_steps=accum,
            # warm-up + measured >= 2 x accumulation: two updates and their apply step.
            measured_steps=max(
                presets.TRIAL_MEASURED_STEPS, 2 * accum - presets.TRIAL_WARMUP_STEPS
            ),
        )
        r = measure_one(
            spec, size, timeout_s=req.trial_timeout_s, memory_limit_bytes=ctx.budget_bytes
        )
        if r.child_pid:
            children.add(r.child_pid)
        return r

    got, line, steps = verify(
        choice.line, choice.micro_batch, measure, ctx.budget_bytes, ctx.step_headroom
    )
    for s in steps:
        ctx.say(f"  verify micro-batch {s.micro_batch}: {s.action} ({s.reason})")
    if got < 1:
        return None, steps
    peak = next(s.peak_bytes for s in steps if s.action == "accepted")
    accum = accumulation_for(got, req.effective_batch, ctx.replicas)
    verified = dataclasses.replace(
        choice,
        micro_batch=got,
        accumulation_steps=accum,
        effective_batch=got * ctx.replicas * accum,
        normalization=normalization_for(got, req.weights),
        predicted_peak_bytes=int(peak),
        line=line,
    )
    return verified, steps


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
    choice = choose(only, time_budget_s=None, **kw)
    note = (
        f"no candidate trains one epoch in the {left:.0f} s left after planning; "
        f"training the fastest, {fastest.label} ({choice.epoch_time_s:.0f} s per epoch), "
        "until the time limit"
    )
    say("warning: " + note)
    evals = []
    for e in untimed.evaluations:
        if e.candidate == fastest:
            e = dataclasses.replace(e, verdict="chosen", reason="the shortest epoch: " + note)
        elif e.verdict in ("chosen", "feasible"):
            why = f"too slow: {e.epoch_time_s:.0f} s per epoch, {left:.0f} s left"
            e = dataclasses.replace(e, verdict="rejected", reason=why)
        evals.append(e)
    return dataclasses.replace(
        choice, epochs=1, evaluations=tuple(evals), warnings=(note, *choice.warnings)
    )
