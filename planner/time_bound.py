"""A candidate's best possible score under a time budget, from another candidate's step time.

Under a time budget the objective's time factor dominates the score (docs/planning.md,
"The objective"), so the time-free bound (`search.choose.score_bound`, every epoch it
wants) skips nothing. Once one candidate is measured, its step time calibrates this
machine: a candidate's step time is estimated as the measured seconds per sample-pixel,
scaled by the two backbones' relative step cost (`presets.RELATIVE_STEP_COST`) and the
candidate's own pixels. Its *best possible score* is its score with memory
unconstrained and a step time `presets.TIME_BOUND_MARGIN` (0.7) times that estimate;
its *estimated score* (for the measuring order) uses the estimate itself. A backbone or
device without a figure keeps the time factor at 1: never skipped on time.

Both scores come from `search.choose.choose` itself, run on a synthetic measurement
(a peak of a few bytes, step times in proportion to the micro-batch), so they follow
the objective exactly as the choice will. Pure: no processes, no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from planner import measure_order as order
from planner.request import PlanContext
from planner.search import presets
from planner.search.candidates import Candidate
from planner.search.choice import CandidateMeasurement, Evaluation
from planner.search.choose import score_bound
from planner.trials.spec import TrialResult


@dataclass(frozen=True)
class Calibration:
    """Seconds per sample-pixel of a relative-cost-1 backbone on this machine, and whence."""

    unit_s: float
    source: str  # "mobilenet_v3_small 384x384 float32 at micro-batch 4", or "guess"


def relative_cost(c: Candidate, device: str) -> float | None:
    """`c`'s train-step cost per sample-pixel relative to the table's unit, or `None`."""
    if c.precision != "float32":  # the figures are float32 steps
        return None
    return presets.RELATIVE_STEP_COST.get(device, {}).get(c.backbone)


def _real(r: TrialResult) -> bool:
    """A measured point that may calibrate: ok, timed, not estimated, not run side by side."""
    d = r.details
    return (
        r.ok
        and bool(r.step_time_s)
        and not d.get("estimated")
        and not d.get("concurrent")
        and r.micro_batch > 0
    )


def calibrate(measured: Sequence[CandidateMeasurement], ctx: PlanContext) -> Calibration | None:
    """The unit cost from what is measured: the smallest seconds per sample-pixel over every
    real point of a candidate with a relative cost (the fastest is the safest lower bound);
    `None` before any such point."""
    best: Calibration | None = None
    for m in measured:
        rel = relative_cost(m.candidate, ctx.device)
        if rel is None:
            continue
        h, w = m.candidate.input_size
        for r in m.trials:
            if not _real(r):
                continue
            unit = r.step_time_s / (r.micro_batch * h * w) / rel
            if best is None or unit < best.unit_s:
                src = f"{m.candidate.label} at micro-batch {r.micro_batch}"
                best = Calibration(unit, src)
    return best


def guess(ctx: PlanContext) -> Calibration | None:
    """Before any measurement, on a CPU: the unit measured here scaled by usable cores.

    For the measuring order only (which candidate to measure first); never to skip.
    """
    unit = presets.CPU_STEP_S_PER_PIXEL_GUESS if ctx.device == "cpu" else None
    if unit is None:
        return None
    cores = int(ctx.hardware.get("cpu", {}).get("usable_cpus") or presets.CPU_GUESS_CORES)
    return Calibration(unit * presets.CPU_GUESS_CORES / max(1, cores), "guess")


@dataclass(frozen=True)
class Bound:
    """A candidate's best possible score, and whether it can train `min_epochs` at all.

    `why`: what bounded the score (`""`: the time-free bound, `score_bound`). `epochs`:
    the most epochs it can train (`None`: not bounded, it may train any number).
    """

    score: float
    why: str = ""
    epochs: int | None = None

    def cannot_beat(self, lead: Evaluation) -> bool:
        """Whether a candidate with this bound can never be chosen over `lead` (what
        `choose` picks now): its score is below, and either `lead` trains `min_epochs`
        or this one cannot (then `choose` never ranks it in a pool that excludes `lead`)."""
        want = presets.DEFAULT_OBJECTIVE.min_epochs
        if round(self.score, 6) >= lead.score:  # `choose` rounds scores
            return False
        return (lead.epochs_possible or 0) >= want or (
            self.epochs is not None and self.epochs < want
        )


def score_at(c: Candidate, per_sample_s: float, ctx: PlanContext) -> tuple[float, int]:
    """`c`'s score and epochs with memory unconstrained and `per_sample_s` s per sample."""
    trials = tuple(
        TrialResult("ok", mb, peak_bytes=mb, step_time_s=per_sample_s * mb)
        for mb in presets.TRIAL_MICRO_BATCHES
    )
    # Memory unconstrained: a budget nothing reaches, no headroom.
    choice = order.choose_now(
        [CandidateMeasurement(c, trials=trials)], ctx, budget_bytes=2**62, headroom=0.0
    )
    if choice is None:  # not one epoch even so
        return 0.0, 0
    (e,) = choice.evaluations
    return choice.score, int(e.epochs_possible or 0)


def _bound(c: Candidate, cal: Calibration | None, ctx: PlanContext, margin: float) -> Bound:
    rel = relative_cost(c, ctx.device)
    if ctx.request.budget_time_s is None or cal is None or rel is None:
        return Bound(score_bound(c))
    h, w = c.input_size
    score, epochs = score_at(c, margin * cal.unit_s * rel * h * w, ctx)
    why = f"step time at least {margin:g}x the estimate from {cal.source}"
    return Bound(min(score_bound(c), score), why, epochs)


def best_possible(
    c: Candidate, measured: Sequence[CandidateMeasurement], ctx: PlanContext
) -> Bound:
    """`c`'s best possible score (and epochs) given what is measured.

    Under a time budget, with a calibration and relative costs for both backbones: its
    score at `TIME_BOUND_MARGIN` x the estimated step time, memory unconstrained;
    otherwise the time-free bound (`search.choose.score_bound`).
    """
    return _bound(c, calibrate(measured, ctx), ctx, presets.TIME_BOUND_MARGIN)


def estimated_score(
    c: Candidate, measured: Sequence[CandidateMeasurement], ctx: PlanContext
) -> float:
    """`c`'s estimated score for the measuring order: calibrated by what is measured, else
    by the CPU guess, else (GPU, no figures) the time-free bound."""
    return _bound(c, calibrate(measured, ctx) or guess(ctx), ctx, 1.0).score


def estimated_only(c: Candidate, ctx: PlanContext, why: str) -> CandidateMeasurement | None:
    """`c` with both trial sizes estimated, not measured: the analytic peak
    (`candidates.analytic_estimate`) and the CPU guess's step time (`guess`, scaled by the
    backbone's relative cost and the candidate's pixels); `None` without a guess or a
    relative cost (a GPU, another backbone or precision).

    For `train --auto` when the planning cap has no room for a trial child beside the
    verification run: that run then measures the plan, its peak as always and its step
    time for the plan's time figures (`verified_choice.time_from_verification`).
    """
    from planner.search.candidates import analytic_estimate

    cal, rel = guess(ctx), relative_cost(c, ctx.device)
    if cal is None or rel is None:
        return None
    h, w = c.input_size
    per_sample = cal.unit_s * rel * h * w
    trials = tuple(
        TrialResult(
            "ok",
            mb,
            peak_bytes=analytic_estimate(
                c.backbone, c.input_size, mb, c.precision, ctx.num_classes, device=ctx.device
            ),
            step_time_s=per_sample * mb,
            details={"estimated": f"analytic estimate and CPU guess, not measured: {why}"},
        )
        for mb in presets.TRIAL_MICRO_BATCHES
    )
    return CandidateMeasurement(c, trials=trials)


def from_sibling(
    c: Candidate, measured: Sequence[CandidateMeasurement], ctx: PlanContext, norm: str
) -> CandidateMeasurement | None:
    """`c` estimated from a measured candidate of the same backbone, precision and
    BatchNorm mode at a larger input size (its *sibling*), or `None` (measure it).

    Both trial sizes: the analytic peak (`candidates.analytic_estimate`) shifted by what
    the sibling's largest measured point had above or below its own analytic peak (the
    fixed part, TensorFlow's runtime and the allocator, is what the estimate misses most),
    and the sibling's seconds per sample-pixel at that point times `c`'s pixels. Only from
    a larger sibling: per pixel a smaller input steps about as fast or faster (on the
    2-vCPU EPYC, mobilenet_v3_small at micro-batch 4: 4.46-4.92e-6 s per sample-pixel
    at 256x256 and 384x384, docs/planning.md; in two other runs 1.17 s at 256x256 and
    3.45-3.69 s at 384x384, 0.76x per pixel), so the estimate does not favour the
    candidate it was not measured on. A candidate planned from it is chosen or passed over
    on these figures; if chosen, its verification run measures its peak as always and
    times its steps, which replace the estimate's (`verified_choice.time_from_verification`).
    Saves one trial child (23-30 s there) per sibling. CPU only: the shift was checked
    against CPU trials, and a GPU's allocator peak has no such fixed part.
    """
    from planner.search.candidates import analytic_estimate

    if ctx.device != "cpu" or relative_cost(c, ctx.device) is None:
        return None

    def est(x: Candidate, mb: int) -> int:
        return analytic_estimate(
            x.backbone, x.input_size, mb, x.precision, ctx.num_classes, device=ctx.device
        )

    for m in measured:
        s = m.candidate
        same = (s.backbone, s.precision, m.normalization) == (c.backbone, c.precision, norm)
        real = [r for r in m.trials if _real(r) and r.peak_bytes]
        (sh, sw), (h, w) = s.input_size, c.input_size
        if s == c or not same or not real or sh * sw <= h * w:
            continue
        r = max(real, key=lambda t: t.micro_batch)
        shift = r.peak_bytes - est(s, r.micro_batch)
        per_sample = r.step_time_s / r.micro_batch * (h * w) / (sh * sw)
        why = (
            f"not measured: estimated from {s.label}'s trial at micro-batch {r.micro_batch} "
            "(analytic peak shifted by its error, its step time per pixel)"
        )
        trials = tuple(
            TrialResult(
                "ok",
                mb,
                peak_bytes=max(1, est(c, mb) + shift),
                step_time_s=per_sample * mb,
                details={"estimated": why, "sibling": s.label},
            )
            for mb in presets.TRIAL_MICRO_BATCHES
        )
        return CandidateMeasurement(c, trials=trials, normalization=norm)
    return None
