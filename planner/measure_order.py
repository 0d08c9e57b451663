"""Which candidates `planner.make_plan` measures, at which sizes, and what it says it skipped.

Planning measures best first (`search.choose.score_bound`) and stops measuring what
cannot win (`best_measured`); under `train --auto` it fits its children into the
planning cap (`sizes_in_time`, `presets.AUTO_PLANNING_SHARE`), down to one trial size
with the analytic slope for the second point (`with_analytic_slope`). `lost_to`
names the skipped candidates to measure after all when the one they lost to failed
verification; `planning_evidence` records what was cached, estimated and skipped.
Pure: no processes, no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from planner.request import PlanContext
from planner.search import candidates as cand
from planner.search import presets
from planner.search.candidates import Candidate
from planner.search.choice import CandidateMeasurement, Evaluation
from planner.search.choose import choose
from planner.trials.cache import TrialCache
from planner.trials.spec import TrialResult, TrialSpec
from trainer.errors import FitplanError
from trainer.units import gib

# How a candidate that cannot win is recorded: "not measured: cannot beat <label> (...)".
CANNOT_BEAT = "not measured: cannot beat"


def sizes_in_time(
    spec: TrialSpec,
    ctx: PlanContext,
    cache: TrialCache | None,
    done: Sequence[CandidateMeasurement],
    *,
    must: bool,
) -> tuple[tuple[int, ...], str | None]:
    """The trial sizes that fit in the `--auto` planning cap: `(sizes, None)` or `((), reason)`.

    A child is expected to take as long as the slowest one so far (before the first,
    `presets.TRIAL_CHILD_GUESS_S`); the verification run keeps
    `presets.VERIFY_CHILD_EQUIVALENTS` children's worth. Cached sizes cost nothing.
    When both sizes do not fit: one size (the largest; `with_analytic_slope` adds the
    slope); when none fits and no candidate is feasible yet (`must`), one size anyway.
    """
    walls = [r.details.get("child_wall_s") for m in done for r in m.trials]
    per_child = max([w for w in walls if w], default=presets.TRIAL_CHILD_GUESS_S)
    spare = ctx.planning_left() - per_child * presets.VERIFY_CHILD_EQUIVALENTS
    limit = ctx.budget_bytes
    sizes = presets.TRIAL_MICRO_BATCHES
    cached = [mb for mb in sizes if cache is not None and cache.has(spec, mb, limit)]
    if (len(sizes) - len(cached)) * per_child <= spare:
        return sizes, None
    if len(cached) == len(sizes) - 1 or (cached and not must):
        return tuple(cached), None
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


def best_measured(measured: Sequence[CandidateMeasurement], ctx: PlanContext) -> Evaluation | None:
    """The measured candidate `choose` would pick now, if it trains the epochs it wants."""
    req = ctx.request
    try:
        choice = choose(
            [m for m in measured if m.trials],
            budget_bytes=ctx.budget_bytes,
            headroom=ctx.step_headroom,
            time_budget_s=ctx.time_left(),
            n_train_samples=ctx.n_train,
            native_hw=ctx.native_hw,
            target_effective_batch=req.target_batch,
            fixed_effective_batch=req.batch_fixed,
            replicas=ctx.replicas,
            weights=req.weights,
        )
    except FitplanError:  # nothing feasible yet
        return None
    best = next(e for e in choice.evaluations if e.verdict == "chosen")
    return best if best.epochs_possible >= presets.DEFAULT_OBJECTIVE.min_epochs else None


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
