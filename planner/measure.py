"""Measure the candidates in trial children: best estimate first, one size each, the leader twice.

`measure_candidates` is the trials stage of `planner.make_plan`:

1. Candidates go in the order of their estimated score (`planner.time_bound`: under a
   time budget, the objective with the step time estimated from what is measured, or
   on a CPU before the first measurement from a guess; otherwise the time-free bound).
2. A candidate whose best possible score (`time_bound.best_possible`) is below the
   score of a measured one that trains the epochs it wants is recorded
   "not measured: cannot beat <label> (score at most a < b...)".
3. Every other one is measured at one size in one child (`measure_order.first_sizes`:
   its cached sizes, else the larger trial size that the analytic estimate fits), the
   line's second point from the analytic slope (`measure_order.with_analytic_slope`).
4. Once all are measured or skipped, the leader (what `choose` would pick) gets its
   second size measured, so the choice and its verification run rest on two measured
   sizes, unless that size cannot change the choice (`measure_order.second_size_moot`:
   the leader's micro-batch is its whole effective batch and at most the size measured;
   or above it, `second_size_moot_above`: it still fits and leads on a line over the
   real one, `upper_line`; the estimated point then says `not_measured` in its details);
   a candidate skipped against a score that then dropped is measured after all.

Under `train --auto` the planning cap decides how many children fit
(`measure_order.sizes_in_time`, `child_fits`); under a time budget `fitplan plan` stops
starting children once planning has used `presets.PLANNING_SHARE` of it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from planner import measure_order as order
from planner import time_bound
from planner.request import PlanContext
from planner.search import candidates as cand
from planner.search import presets
from planner.search.choice import CandidateMeasurement
from planner.search.choose import score_bound
from planner.trials.cache import TrialCache
from planner.trials.spec import TrialResult, TrialSpec
from planner.trials.trial import measure_each, measure_one


class _Measuring:
    """The state of one trials stage: what is measured, what was skipped on which bound."""

    def __init__(self, ctx, children, cache, known):
        self.ctx = ctx
        self.children: set[int] = children
        self.cache: TrialCache | None = cache
        self.known = {m.candidate: m for m in known}
        self.out: dict[cand.Candidate, CandidateMeasurement] = {}
        self.bounds: dict[cand.Candidate, time_bound.Bound] = {}  # skipped: cannot win
        self.traces = 0

    def measured(self) -> list[CandidateMeasurement]:
        both = {**self.known, **self.out}
        return [m for m in both.values() if m.trials]

    def stopped(self) -> str | None:
        """Why no more children start under `fitplan plan`'s time budget, or `None`."""
        budget_time = self.ctx.request.budget_time_s
        if budget_time is not None and self.ctx.elapsed() > presets.PLANNING_SHARE * budget_time:
            return (
                f"not measured: planning already used {presets.PLANNING_SHARE:.0%} "
                "of the time budget"
            )
        return None

    def one_pass(self, pending: Sequence[cand.Candidate]) -> None:
        """Measure or skip each of `pending`, the best estimated score first."""
        ctx = self.ctx
        queue = list(pending)
        while queue:
            done = self.measured()
            queue.sort(key=lambda c: (-time_bound.estimated_score(c, done, ctx), -score_bound(c)))
            c = queue.pop(0)
            lead, best = order.leader(done, ctx), order.best_measured(done, ctx)
            bound = time_bound.best_possible(c, done, ctx)
            spec, norm = trial_spec_for(c, ctx)
            sizes = order.first_sizes(c, spec, ctx, self.cache)
            reason = None
            if lead is not None and bound.cannot_beat(lead):
                more = ""
                if best is None:  # neither trains min_epochs: `choose` ranks them together
                    more += f", at most {bound.epochs} epochs"
                more += f"; {bound.why}" if bound.why else ""
                reason = (
                    f"{order.CANNOT_BEAT} {lead.candidate.label} "
                    f"(score at most {bound.score:.3f} < {lead.score:.3f}{more})"
                )
                self.bounds[c] = bound
            elif best is not None:
                reason = self.stopped()
            sib = None
            if reason is None and not order.any_cached(spec, ctx, self.cache):
                sib = time_bound.from_sibling(c, done, ctx, norm)
            if sib is not None:
                # The same backbone measured at a larger input: estimated from it, and
                # verified by its own run if chosen (time_bound.from_sibling).
                ctx.say(f"  {c.label}: {sib.trials[0].details['estimated']}")
                self.out[c] = sib
                continue
            if (
                reason is None
                and lead is None
                and not order.trial_fits(spec, ctx, self.cache, done)
            ):
                # Under the --auto cap with no room for a trial child beside the
                # verification run, and nothing to plan from yet: the analytic estimate
                # and the CPU guess; the verification run measures the plan.
                why = order.cap_reason(ctx, done)
                est = time_bound.estimated_only(c, ctx, why)
                if est is not None:
                    ctx.say(f"  {c.label}: planned from the analytic estimate ({why})")
                    self.out[c] = dataclasses.replace(est, normalization=norm)
                    continue
            if reason is None and ctx.planning_left() is not None:
                # Past the cap, a child starts only while nothing measured is feasible at
                # all: a plan needs one. A leader short of `min_epochs` is still a plan
                # (under a short budget none reaches it), so measuring stops there.
                sizes, reason = order.sizes_in_time(
                    spec, sizes, ctx, self.cache, done, must=lead is None
                )
            if reason is not None:
                self.out[c] = CandidateMeasurement(c, pruned_reason=reason)
                ctx.say(f"skipped {c.label}: {reason}")
                continue
            self.bounds.pop(c, None)
            self.out[c] = self.measure(c, spec, norm, sizes)

    def complete_leader(self) -> None:
        """Measure the leader's second size while the leader's line has an estimated point."""
        ctx = self.ctx
        while True:
            lead = order.leader(self.measured(), ctx)
            if lead is None:
                return
            c = lead.candidate
            m = self.out.get(c) or self.known[c]
            size = order.second_size(m)
            if size is None:
                return
            moot = order.second_size_moot(lead, m, ctx.replicas)
            moot = moot or order.second_size_moot_above(lead, m, self.measured(), ctx)
            if moot is not None:
                ctx.say(f"  {c.label} leads; its second size is not measured: {moot}")
                trials = tuple(
                    dataclasses.replace(r, details={**r.details, "not_measured": moot})
                    if r.details.get("estimated")
                    else r
                    for r in m.trials
                )
                self.out[c] = dataclasses.replace(m, trials=trials)
                return
            why = self.stopped()
            if why is None and not order.child_fits(ctx, self.measured()):
                why = "the planning cap leaves no time for another child"
            if why is not None:
                ctx.say(f"  {c.label} leads; its second size stays estimated: {why}")
                return
            ctx.say(f"{c.label} leads: measuring its second size {size} before the choice...")
            spec, _ = trial_spec_for(c, ctx)
            real = [r for r in m.trials if not r.details.get("estimated")]
            r = measure_one(dataclasses.replace(spec, micro_batches=(size,)), size, **self.limits)
            results = sorted([*real, r], key=lambda t: t.micro_batch)
            results = self._between(spec, results)
            self._count([t for t in results if all(t is not x for x in real)])
            ctx.say("  " + "; ".join(order.trial_line(t) for t in results))
            self.out[c] = dataclasses.replace(m, trials=tuple(results))

    def unskip(self) -> list[cand.Candidate]:
        """Candidates skipped against a score that has since dropped below their bound."""
        lead = order.leader(self.measured(), self.ctx)
        again = [c for c, b in self.bounds.items() if lead is None or not b.cannot_beat(lead)]
        for c in again:
            del self.bounds[c]
            self.ctx.say(f"measuring {c.label} after all: the leader's score dropped")
        return again

    @property
    def limits(self) -> dict:
        return dict(
            timeout_s=self.ctx.request.trial_timeout_s,
            memory_limit_bytes=self.ctx.budget_bytes,
            cache=self.cache,
        )

    def measure(
        self, c: cand.Candidate, spec: TrialSpec, norm: str, sizes: Sequence[int]
    ) -> CandidateMeasurement:
        """Trial children at `sizes` (smaller ones too after an out-of-memory)."""
        self.ctx.say(
            f"measuring {c.label} at micro-batch{'es' if len(sizes) > 1 else ''} "
            f"{list(sizes)} (one child each, BatchNorm {norm})..."
        )
        results = measure_each(dataclasses.replace(spec, micro_batches=tuple(sizes)), **self.limits)
        smaller = [mb for mb in presets.TRIAL_MICRO_BATCHES if mb < min(sizes)]
        if len(sizes) == 1 and results[-1].status == "oom" and smaller:
            self.ctx.say(f"  out of memory at {sizes[0]}: measuring {smaller} too")
            below = measure_each(
                dataclasses.replace(spec, micro_batches=tuple(smaller)), **self.limits
            )
            results = sorted([*below, *results], key=lambda r: r.micro_batch)
        results = self._between(spec, results)
        if len(results) == 1:
            results = order.with_analytic_slope(c, results, self.ctx)
        self._count(results)
        self.ctx.say("  " + "; ".join(order.trial_line(r) for r in results))
        return CandidateMeasurement(c, trials=tuple(results), normalization=norm)

    def _between(self, spec: TrialSpec, results: list[TrialResult]) -> list[TrialResult]:
        between = size_between(results)
        if between is None:
            return results
        self.ctx.say(f"  out of memory at {results[-1].micro_batch}: measuring {between} too")
        mid = measure_one(spec, between, **self.limits)
        return sorted([*results, mid], key=lambda r: r.micro_batch)

    def _count(self, results: Sequence[TrialResult]) -> None:
        fresh = [r for r in results if not r.details.get("cached")]
        self.children |= {r.child_pid for r in fresh if r.child_pid}
        self.traces += sum(r.traces or 0 for r in fresh if not r.details.get("estimated"))


def measure_candidates(
    kept: Sequence[cand.Candidate],
    ctx: PlanContext,
    children: set[int],
    cache: TrialCache | None,
    *,
    known: Sequence[CandidateMeasurement] = (),
) -> tuple[list[CandidateMeasurement], int]:
    """Measure `kept` (module docstring); `known`: candidates measured before, to beat
    (and to complete: the leader among them gets its second size too).

    Returns the measurements (of `kept`, and of a `known` leader whose second size was
    measured here) and the number of graph traces; `children` receives the process ids.
    """
    run = _Measuring(ctx, children, cache, known)
    pending = list(kept)
    for _ in range(3 * len(pending) + 1):  # each round measures something new, or ends
        run.one_pass(pending)
        run.complete_leader()  # also with nothing pending: a known one may lead now
        pending = run.unskip()
        if not pending:
            break
    return list(run.out.values()), run.traces


def trial_spec_for(c: cand.Candidate, ctx: PlanContext) -> tuple[TrialSpec, str]:
    """The candidate's trial spec at the preset sizes, in the BatchNorm mode of its plan."""
    req = ctx.request
    max_mb = min(presets.MAX_MICRO_BATCH, math.ceil(req.target_batch / ctx.replicas))
    norm = cand.trial_normalization(
        c,
        allowed_bytes=ctx.step_allowed_bytes,
        max_micro_batch=max_mb,
        num_classes=ctx.num_classes,
        device=ctx.device,
        weights=req.weights,
    )
    spec = cand.trial_spec(c, num_classes=ctx.num_classes, device=ctx.device, normalization=norm)
    return spec, norm


def size_between(results: Sequence[TrialResult]) -> int | None:
    """A size to measure between the largest that fit and a larger one out of memory.

    With one size measured and the next out of memory (e.g. 1 fits, 4 does not, under a
    tight budget), the search has no line and would stop at the measured size although
    2 or 3 may fit. One more child at the size halfway gives the second point. `None`
    when there is nothing between, or the failure was not out of memory.
    """
    ok = [r for r in results if r.ok]
    bad = [r for r in results if not r.ok]
    if len(ok) != 1 or not bad or bad[0].status != "oom":
        return None
    low, high = ok[0].micro_batch, bad[0].micro_batch
    return (low + high) // 2 if high - low >= 2 else None
