"""Which candidates `planner.make_plan` measures, at which sizes, and what it says it skipped.

Planning measures in the order of the estimated score (`planner.time_bound`) and stops
measuring what cannot win (`best_measured` against `time_bound.best_possible`). Each
candidate is measured at one size first (`first_sizes`, `with_analytic_slope` for the
line's second point); the one that leads gets its second size before the choice
(`leader`, `second_size`). Under `train --auto` children fit into the planning cap
(`sizes_in_time`, `child_fits`, `presets.AUTO_PLANNING_SHARE`). `lost_to` names the
skipped candidates to measure after all when the one they lost to failed verification;
`planning_evidence` records what was cached, estimated and skipped.
Pure: no processes, no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from planner.request import PlanContext
from planner.search import candidates as cand
from planner.search import presets
from planner.search.candidates import Candidate
from planner.search.choice import CandidateMeasurement, Choice, Evaluation
from planner.search.choose import choose
from planner.trials.cache import TrialCache
from planner.trials.spec import TrialResult, TrialSpec
from trainer.errors import FitplanError
from trainer.units import gib

# How a candidate that cannot win is recorded: "not measured: cannot beat <label> (...)".
CANNOT_BEAT = "not measured: cannot beat"


def _child_cost(ctx: PlanContext, done: Sequence[CandidateMeasurement]) -> tuple[float, float]:
    """`(seconds one trial child is expected to take, planning seconds spare for trials)`.

    A child is expected to take as long as the slowest one so far (before the first,
    `presets.TRIAL_CHILD_GUESS_S`); the verification run keeps
    `presets.VERIFY_CHILD_EQUIVALENTS` children's worth of the `--auto` cap.
    """
    walls = [r.details.get("child_wall_s") for m in done for r in m.trials]
    per_child = max([w for w in walls if w], default=presets.TRIAL_CHILD_GUESS_S)
    left = ctx.planning_left()
    spare = math.inf if left is None else left - per_child * presets.VERIFY_CHILD_EQUIVALENTS
    return per_child, spare


def child_fits(ctx: PlanContext, done: Sequence[CandidateMeasurement]) -> bool:
    """Whether one more trial child fits in the `--auto` planning cap (always without one)."""
    per_child, spare = _child_cost(ctx, done)
    return per_child <= spare


def first_sizes(
    c: Candidate, spec: TrialSpec, ctx: PlanContext, cache: TrialCache | None
) -> tuple[int, ...]:
    """The trial sizes to measure a candidate at first: its cached sizes, else one size.

    One child per candidate: the largest trial size whose analytic estimate fits the
    memory limit (else the smallest); `with_analytic_slope` gives the line its second
    point. The candidate that leads once all are measured gets its second size measured
    before the choice (`second_size`); the others keep the estimate (the chosen plan is
    verified by a run of its own either way).
    """
    sizes = presets.TRIAL_MICRO_BATCHES
    limit = ctx.budget_bytes
    cached = tuple(mb for mb in sizes if cache is not None and cache.has(spec, mb, limit))
    if cached:
        return cached
    fits = [
        mb
        for mb in sizes
        if cand.analytic_estimate(
            c.backbone, c.input_size, mb, c.precision, ctx.num_classes, device=ctx.device
        )
        <= limit
    ]
    return (fits[-1] if fits else sizes[0],)


def second_size(m: CandidateMeasurement) -> int | None:
    """The trial size the leader still needs measured (its line has an estimated point), or
    `None`: both sizes are real, or its measured size did not finish."""
    real = [r for r in m.trials if not r.details.get("estimated")]
    if len(real) != 1 or not real[0].ok:
        return None
    return next((mb for mb in presets.TRIAL_MICRO_BATCHES if mb != real[0].micro_batch), None)


def second_size_moot(lead: Evaluation, m: CandidateMeasurement, replicas: int) -> str | None:
    """Why the leader's second size cannot change the choice, or `None` (measure it).

    It cannot when the leader's micro-batch is already its whole effective batch
    (accumulation 1: no larger micro-batch is allowed, the step up included) and at most
    the size measured: the peak there is at most the measured one (the peak grows with
    the micro-batch), so memory cannot move the choice down either. The second size
    would only refine the step time at sizes the plan does not use, and the verification
    run measures the plan's own. Saves one trial child (25-35 s on the 2-vCPU EPYC).
    """
    real = [r for r in m.trials if not r.details.get("estimated") and r.ok]
    if len(real) != 1 or lead.accumulation_steps != 1:
        return None
    measured = real[0].micro_batch
    if lead.micro_batch > measured or lead.micro_batch * replicas < lead.target_batch:
        return None
    return (
        f"its micro-batch {lead.micro_batch} is the whole effective batch and at most the "
        f"size measured ({measured}): another size cannot change the choice"
    )


def upper_line(m: CandidateMeasurement, device: str = "cpu") -> CandidateMeasurement:
    """`m` with its estimated point moved so that its line lies at or over the real one
    above the measured size: the peak's slope `presets.SECOND_SIZE_SLOPE_MARGIN` x the
    analytic slope (the estimated point's), never steeper than the line through zero (a
    peak is a fixed part of about 1.0-1.6 GiB on a CPU plus a part per sample, so that
    line is over the real one), and the step time in proportion to the micro-batch (a
    step's seconds per sample do not grow with it). What fits and leads on this line fits
    and leads on the real line, unless the analytic slope is off by more than the margin;
    the verification run measures the plan's size either way. The margin was checked
    against CPU trials only: on another `device`, the line through zero.
    """
    real = next(r for r in m.trials if not r.details.get("estimated") and r.ok)
    margin = presets.SECOND_SIZE_SLOPE_MARGIN if device == "cpu" else None

    def moved(r: TrialResult) -> TrialResult:
        if not r.details.get("estimated") or real.peak_bytes is None or r.peak_bytes is None:
            return r
        d = real.micro_batch - r.micro_batch
        slope = real.peak_bytes / real.micro_batch  # through zero
        if d and margin is not None:
            slope = min(slope, margin * (real.peak_bytes - r.peak_bytes) / d)
        slope = max(slope, 0.0)
        k = r.micro_batch / real.micro_batch
        return dataclasses.replace(
            r,
            peak_bytes=max(1, int(real.peak_bytes - slope * d)),
            step_time_s=real.step_time_s * k if real.step_time_s else r.step_time_s,
        )

    return dataclasses.replace(m, trials=tuple(moved(r) for r in m.trials))


def second_size_moot_above(
    lead: Evaluation,
    m: CandidateMeasurement,
    measured: Sequence[CandidateMeasurement],
    ctx: PlanContext,
) -> str | None:
    """Why the leader's second size cannot change the choice although the plan's
    micro-batch is above the size measured, or `None` (measure it).

    It cannot when the micro-batch is the whole effective batch (accumulation 1, no
    larger one allowed) and `choose` still picks the same candidate at the same
    micro-batch on the leader's `upper_line` (memory and step time at or above the real
    line there): the real line can only fit it more easily and score it higher. The
    verification run then measures the plan's own size, as always. Saves one trial
    child (15-25 s on the 2-vCPU EPYC: the 4 GiB / 20 min epfl-em plan, mobilenet_v3_small
    256x256 at 8 x 1, spent 14.6 s on its micro-batch 1 child).
    """
    real = [r for r in m.trials if not r.details.get("estimated") and r.ok]
    if len(real) != 1 or lead.accumulation_steps != 1:
        return None
    size = real[0].micro_batch
    if lead.micro_batch <= size or lead.micro_batch * ctx.replicas < lead.target_batch:
        return None
    bound = upper_line(m, ctx.device)
    again = leader([bound if x.candidate == m.candidate else x for x in measured], ctx)
    if again is None or (again.candidate, again.micro_batch, again.accumulation_steps) != (
        lead.candidate,
        lead.micro_batch,
        1,
    ):
        return None
    return (
        f"its micro-batch {lead.micro_batch} is the whole effective batch, and it fits and "
        f"leads even on a line over the real one from the size measured ({size}; peak slope "
        f"{presets.SECOND_SIZE_SLOPE_MARGIN:g}x the analytic one, step time in proportion): "
        "another size cannot change the choice"
    )


def trial_fits(
    spec: TrialSpec,
    ctx: PlanContext,
    cache: TrialCache | None,
    done: Sequence[CandidateMeasurement],
) -> bool:
    """Whether a trial of `spec` fits the `--auto` planning cap beside the verification
    run (always without a cap, or with a size cached)."""
    if ctx.planning_left() is None or any_cached(spec, ctx, cache):
        return True
    return child_fits(ctx, done)


def any_cached(spec: TrialSpec, ctx: PlanContext, cache: TrialCache | None) -> bool:
    """Whether some trial size of `spec` is in the measurement cache (then it is used)."""
    limit = ctx.budget_bytes
    return cache is not None and any(
        cache.has(spec, mb, limit) for mb in presets.TRIAL_MICRO_BATCHES
    )


def cap_reason(ctx: PlanContext, done: Sequence[CandidateMeasurement]) -> str:
    """What the `--auto` cap leaves against what a child takes (the log, the evidence)."""
    per_child, spare = _child_cost(ctx, done)
    cap = presets.AUTO_PLANNING_SHARE * (ctx.request.budget_time_s or 0.0)
    return (
        f"the planning cap ({cap:.0f} s, {presets.AUTO_PLANNING_SHARE:.0%} of the time "
        f"budget) leaves {max(spare, 0):.0f} s beside the verification run, a trial child "
        f"takes ~{per_child:.0f} s"
    )


def sizes_in_time(
    spec: TrialSpec,
    sizes: Sequence[int],
    ctx: PlanContext,
    cache: TrialCache | None,
    done: Sequence[CandidateMeasurement],
    *,
    must: bool,
) -> tuple[tuple[int, ...], str | None]:
    """Which of `sizes` fit in the `--auto` planning cap: `(sizes, None)` or `((), reason)`.

    Cached sizes cost nothing. When the children do not fit: the cached sizes if any;
    when none fits and no candidate is feasible yet (`must`), the largest size anyway.
    """
    per_child, spare = _child_cost(ctx, done)
    limit = ctx.budget_bytes
    cached = tuple(mb for mb in sizes if cache is not None and cache.has(spec, mb, limit))
    if (len(sizes) - len(cached)) * per_child <= spare:
        return tuple(sizes), None
    if cached and not must:
        return cached, None
    if per_child <= spare:
        return (sizes[-1],), None
    if must:
        ctx.say(
            f"  the planning cap leaves {max(spare, 0):.0f} s, a child takes ~{per_child:.0f} s: "
            "measuring one size anyway (a plan needs one measured candidate)"
        )
        return (sizes[-1],), None
    cap = presets.AUTO_PLANNING_SHARE * ctx.request.budget_time_s
    return (), (
        f"not measured: the planning cap ({cap:.0f} s, {presets.AUTO_PLANNING_SHARE:.0%} of "
        f"the time budget) leaves {max(spare, 0):.0f} s, a child takes ~{per_child:.0f} s"
    )


def choose_now(
    measured: Sequence[CandidateMeasurement],
    ctx: PlanContext,
    *,
    budget_bytes: int | None = None,
    headroom: float | None = None,
) -> Choice | None:
    """What `choose` picks from what is measured now, under the plan's budgets (or the
    given memory budget and headroom); `None` when nothing is feasible."""
    req = ctx.request
    try:
        return choose(
            [m for m in measured if m.trials],
            budget_bytes=ctx.budget_bytes if budget_bytes is None else budget_bytes,
            headroom=ctx.step_headroom if headroom is None else headroom,
            time_budget_s=ctx.time_left(),
            n_train_samples=ctx.n_train,
            native_hw=ctx.native_hw,
            target_effective_batch=req.target_batch,
            fixed_effective_batch=req.batch_fixed,
            replicas=ctx.replicas,
            weights=req.weights,
            device=ctx.device,
        )
    except FitplanError:  # nothing feasible (yet)
        return None


def leader(measured: Sequence[CandidateMeasurement], ctx: PlanContext) -> Evaluation | None:
    """The measured candidate `choose` would pick now, whatever its epochs."""
    choice = choose_now(measured, ctx)
    if choice is None:
        return None
    return next(e for e in choice.evaluations if e.verdict == "chosen")


def best_measured(measured: Sequence[CandidateMeasurement], ctx: PlanContext) -> Evaluation | None:
    """The measured candidate `choose` would pick now, if it trains the epochs it wants."""
    best = leader(measured, ctx)
    if best is None or best.epochs_possible < presets.DEFAULT_OBJECTIVE.min_epochs:
        return None
    return best


def lost_to(m: CandidateMeasurement, failed: Candidate) -> bool:
    """Whether `m` was skipped as unable to beat `failed` (to measure once `failed` fails)."""
    return (m.pruned_reason or "").startswith(f"{CANNOT_BEAT} {failed.label} (")


def with_analytic_slope(
    c: cand.Candidate, results: list[TrialResult], ctx: PlanContext
) -> list[TrialResult]:
    """One measured size and a second point on the analytic slope (`--auto`, time short).

    The memory line needs two sizes; the second (the other trial size) is estimated from
    the measured one with the analytic bytes per sample (`candidates.analytic_estimate`),
    its step time in proportion, marked `estimated` in its details. The verification run
    measures the chosen size either way.
    """
    ok = [r for r in results if r.ok and r.peak_bytes is not None]
    if len(ok) != 1:
        return results
    r = ok[0]
    sizes = presets.TRIAL_MICRO_BATCHES
    other = sizes[0] if r.micro_batch != sizes[0] else sizes[-1]
    if other > r.micro_batch and len(results) > 1:
        return results  # the larger size failed: no line past it

    def est(mb: int) -> int:
        return cand.analytic_estimate(
            c.backbone, c.input_size, mb, c.precision, ctx.num_classes, device=ctx.device
        )

    peak = r.peak_bytes + (est(other) - est(r.micro_batch))
    point = TrialResult(
        "ok",
        other,
        peak_bytes=max(1, int(peak)),
        step_time_s=r.step_time_s * other / r.micro_batch if r.step_time_s else None,
        details={"estimated": "analytic slope through the measured size"},
    )
    return sorted([point, *results], key=lambda t: t.micro_batch)


def trial_line(r: TrialResult) -> str:
    tag = " (cached)" if r.details.get("cached") else ""
    tag = " (estimated)" if r.details.get("estimated") else tag
    if r.ok:
        return f"mb {r.micro_batch}: {gib(r.peak_bytes)}, {r.step_time_s:.2f} s/step{tag}"
    return f"mb {r.micro_batch}: {r.status} ({r.reason}){tag}"


def planning_evidence(
    ctx: PlanContext,
    cache: TrialCache | None,
    measurements: Sequence[CandidateMeasurement],
    verify_steps: Sequence[Any],
) -> dict[str, Any]:
    """What planning reused and what it skipped, for the plan's evidence."""
    points = [r for m in measurements for r in m.trials if not r.details.get("estimated")]
    left = ctx.planning_left()
    b = ctx.request.budget_time_s
    return {
        "cache": None if cache is None else str(cache.root),
        "trial_points": len(points),
        "trial_points_cached": sum(1 for r in points if r.details.get("cached")),
        "trial_points_estimated": sum(
            1 for m in measurements for r in m.trials if r.details.get("estimated")
        ),
        "verification_cached": any(s.details.get("cached") for s in verify_steps),
        "not_measured": {
            m.candidate.label: m.pruned_reason
            for m in measurements
            if (m.pruned_reason or "").startswith("not measured")
        },
        "cap_s": None if left is None else round(presets.AUTO_PLANNING_SHARE * b, 1),
    }
