"""The choice among measured candidates. Pure: no TensorFlow, no processes, no clock.

For each candidate: fit the memory line to its ok trials, take the largest micro-batch
whose predicted peak stays under budget x (1 - headroom) (never above a size that
failed, the target effective batch or `presets.MAX_MICRO_BATCH`), accumulate to the
target effective batch, pick the BatchNorm mode (`trainer.plan.normalization_for`), and
estimate the epoch time from the measured step time. Under a time budget that buys
too few optimizer updates, lower the effective batch (`planner.search.updates`). Then
score what is feasible (`presets.Objective`, docs/planning.md) and pick the best; every
other candidate gets its verdict and reason.

API for `planner.make_plan`:
    CandidateMeasurement(candidate, trials=(), pruned_reason=None, estimate_bytes=None)
    choose(measurements, *, budget_bytes, headroom, time_budget_s, n_train_samples,
           native_hw=None, target_effective_batch=16, fixed_effective_batch=False,
           min_epochs=None, objective=...) -> Choice
        raises `trainer.errors.BudgetError` when nothing fits, naming the smallest need.
    Choice.to_dict(), Choice.evaluations (one `Evaluation` per candidate)
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence

from planner.search import no_fit, presets, updates
from planner.search.candidates import Candidate, accumulation_bytes
from planner.search.choice import CandidateMeasurement, Choice, Evaluation
from planner.search.memory_model import allowed_bytes, fit_line, largest_fitting
from planner.trials.spec import TrialResult
from trainer.data.splits import crops_for, epoch_steps
from trainer.plan import accumulation_for, normalization_for

__all__ = [
    "CandidateMeasurement",
    "Choice",
    "Evaluation",
    "choose",
    "crops_per_epoch",
    "epoch_steps",
    "score_bound",
]

GIB = presets.GIB


def crops_per_epoch(
    n_images: int, native_hw: tuple[int, int] | None, input_hw: tuple[int, int]
) -> int:
    """Training samples per epoch, counted as the trainer counts them (`crops_for`)."""
    if native_hw is None:
        return n_images
    return n_images * crops_for(native_hw[0], native_hw[1], input_hw, None)


def _step_time(ok: Sequence[TrialResult], mb: int) -> float:
    """Step time at `mb`: a line through the measured (size, time) points, or per-sample."""
    pts = sorted({(r.micro_batch, r.step_time_s) for r in ok if r.step_time_s is not None})
    if not pts:
        return math.inf
    if len({m for m, _ in pts}) < 2:
        m, t = pts[-1]
        return t * mb / m
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        line = fit_line([(m, t * 1e9) for m, t in pts])  # in ns: fit_line rounds to ints
    # A noisy line can extrapolate to ~0 at small sizes: floor at half the measured rate.
    per_sample = pts[-1][1] / pts[-1][0]
    return max(line.predict(mb) / 1e9, per_sample * mb * 0.5)


def _size_prior(hw: tuple[int, int], obj: presets.Objective) -> float:
    return (min(hw) / obj.size_reference) ** obj.size_exponent


def score_bound(c: Candidate, objective: presets.Objective = presets.DEFAULT_OBJECTIVE) -> float:
    """The best score `c` can reach: its score with the time factor at 1 (all the epochs
    it wants), whatever memory and step time it turns out to have. A measured candidate
    scoring above it cannot lose to `c` (`planner.make_plan` measures best first)."""
    prior = objective.backbone_prior.get(c.backbone, 0.5)
    prior *= objective.precision_prior.get(c.precision, 1.0)
    return prior * _size_prior(c.input_size, objective)


def _evaluate(
    m, *, budget, headroom, allowed, target, max_mb, replicas=1, device=None
) -> Evaluation:
    """Memory side of one candidate: its (per-replica) micro-batch, or why it has none.

    With a `device`, a micro-batch that needs accumulation must also hold what
    accumulation adds to the train step (`candidates.accumulation_bytes`), which the
    trials (accumulation 1) did not measure."""
    c = m.candidate
    if m.pruned_reason is not None:
        return Evaluation(
            c,
            "pruned",
            m.pruned_reason,
            need_bytes=m.estimate_bytes,
            need_at="micro-batch 1, analytic estimate",
        )
    ok = [r for r in m.trials if r.ok and r.peak_bytes is not None]
    failed = [r for r in m.trials if not r.ok]
    if not ok:
        return _every_trial_failed(c, failed)
    # Per replica: the replicas together should not pass the target effective batch.
    cap = min([r.micro_batch - 1 for r in failed] + [math.ceil(target / replicas), max_mb])
    line = None
    if len({r.micro_batch for r in ok}) >= 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # kept in line.warnings
            line = fit_line([(r.micro_batch, r.peak_bytes) for r in ok])
    mb = _largest_with(ok, line, 0, budget, headroom, allowed, cap)
    extra = accumulation_bytes(device, c.backbone) if device is not None else 0
    if extra and mb >= 1 and accumulation_for(mb, target, replicas) > 1:
        mb = _largest_with(ok, line, extra, budget, headroom, allowed, cap)
    # Measured beats modelled: a measured size's own peak wherever there is one.
    measured = {r.micro_batch: r.peak_bytes for r in ok}
    smallest = min(measured)
    if line is not None and 1 not in measured:
        need, at = int(line.predict(1)), "micro-batch 1"
    else:
        need, at = measured[smallest], f"micro-batch {smallest}"
    if mb < 1:
        if extra and accumulation_for(1, target, replicas) > 1:
            need, at = need + extra, f"{at} with accumulation"
        reason = f"needs {need / GIB:.2f} GiB at {at} > allowed {allowed / GIB:.2f} GiB"
        return Evaluation(c, "rejected", reason, line=line, need_bytes=need, need_at=at)
    peak = measured[mb] if mb in measured else int(line.predict(mb))
    accum = accumulation_for(mb, target, replicas)
    return Evaluation(
        c,
        "feasible",
        "",
        mb,
        accum,
        peak,
        _step_time(ok, mb),
        line=line,
        need_bytes=need,
        need_at=at,
        target_batch=target,
    )


def _largest_with(ok, line, extra, budget, headroom, allowed, cap) -> int:
    """The largest micro-batch up to `cap` whose train step plus `extra` bytes fits
    `allowed`: a measured size's own peak, or the line where there is one (0: none).
    The line and the measured peaks only grow with the micro-batch, so a larger `extra`
    never gives a larger size."""
    mb = max((r.micro_batch for r in ok if r.peak_bytes + extra <= allowed), default=0)
    if line is not None:
        if extra:
            line = dataclasses.replace(
                line, a=line.a + extra, points=tuple((n, p + extra) for n, p in line.points)
            )
        mb = max(mb, largest_fitting(line, budget, headroom, max_micro_batch=cap))
    return min(mb, cap)


def estimated_note(m: CandidateMeasurement) -> str:
    """Where the figures of a candidate that no trial child measured came from ("" when
    one did): every trial point estimated (`planner.time_bound.estimated_only`,
    `from_sibling`). The plan's table says so beside its verdict."""
    if not m.trials or not all(r.details.get("estimated") for r in m.trials):
        return ""
    return str(m.trials[0].details["estimated"])


def _every_trial_failed(c: Candidate, failed: Sequence[TrialResult]) -> Evaluation:
    """Rejected: no trial finished; an out-of-memory peak is a lower bound on its need."""
    first = failed[0] if failed else None
    why = (
        f"{first.status} at micro-batch {first.micro_batch}: {first.reason}"
        if first
        else "no trials"
    )
    if first is not None and first.status == "oom" and first.peak_bytes:
        at = f"micro-batch {first.micro_batch}, out of memory: a lower bound"
        return Evaluation(
            c, "rejected", f"trial failed: {why}", need_bytes=first.peak_bytes, need_at=at
        )
    return Evaluation(c, "rejected", f"trial failed: {why}")


def choose(
    measurements: Sequence[CandidateMeasurement],
    *,
    budget_bytes: int,
    headroom: float = presets.HEADROOM,
    time_budget_s: float | None = None,
    n_train_samples: int,
    native_hw: tuple[int, int] | None = None,
    target_effective_batch: int = presets.TARGET_EFFECTIVE_BATCH,
    fixed_effective_batch: bool = False,
    min_epochs: int | None = None,
    objective: presets.Objective = presets.DEFAULT_OBJECTIVE,
    max_micro_batch: int = presets.MAX_MICRO_BATCH,
    replicas: int = 1,
    weights: str = "none",
    budget_for: Callable[[int], float] | None = None,
    updates_time_s: float | None = None,
    device: str | None = None,
) -> Choice:
    """Pick the candidate that should reach the best validation quality within the budgets.

    Args:
        measurements: every candidate with its trials (pruned ones included, for the record).
        budget_bytes: the memory budget.
        headroom: share of the budget kept free. Defaults to `presets.HEADROOM` (10%).
        time_budget_s: training time available (planning time already subtracted).
            `None` (default): no limit; epochs = `objective.max_epochs`.
        n_train_samples: training images.
        native_hw: their (height, width) at `data.image_scale`, to count crops per epoch
            like the trainer. `None` (default): one sample per image.
        target_effective_batch: micro-batch x accumulation to reach. Defaults to `16`.
            Under a time budget that buys fewer than `objective.updates_wanted` updates
            at it, halved per candidate (`planner.search.updates`).
        fixed_effective_batch: the user set `target_effective_batch`: never lowered.
            Defaults to `False`.
        min_epochs: fewer possible epochs rejects a candidate as too slow (unless no
            candidate reaches it). `None` (default): `objective.min_epochs`.
        objective: the scoring constants. Defaults to `presets.DEFAULT_OBJECTIVE`.
        max_micro_batch: largest micro-batch ever chosen. Defaults to `presets.MAX_MICRO_BATCH`.
        replicas: data-parallel replicas (devices x workers, docs/distributed.md); the
            micro-batch is per replica and `budget_bytes` is one device's (the smallest).
            Effective batch = micro-batch x replicas x accumulation. Defaults to `1`.
        weights: the plan's encoder weights; with the micro-batch they set the BatchNorm
            mode (`trainer.plan.normalization_for`). Defaults to `"none"`.
        budget_for: the budget that would hold a train step needing `n` bytes, for the
            "raise --budget-memory" hint (the planner adds its training-overhead
            estimate as bytes). `None` (default): `n` / (1 - `headroom`).
        updates_time_s: without a time budget, the seconds to count updates in (the
            `--auto` fallback's partial epoch). `None` (default): `time_budget_s`.

    Raises:
        BudgetError: no candidate fits the memory budget (names the smallest need), or
            none can train one epoch within `time_budget_s`.
    """
    if target_effective_batch < 1:
        raise ValueError(
            f"`target_effective_batch` must be >= 1. Received: target_effective_batch={target_effective_batch}"
        )
    allowed = allowed_bytes(budget_bytes, headroom)
    want = objective.min_epochs if min_epochs is None else min_epochs
    count_s = time_budget_s if time_budget_s is not None else updates_time_s

    def at_batch(m: CandidateMeasurement, target: int) -> Evaluation:
        e = _evaluate(
            m,
            budget=budget_bytes,
            headroom=headroom,
            allowed=allowed,
            target=target,
            max_mb=max_micro_batch,
            replicas=replicas,
            device=device,
        )
        e = dataclasses.replace(e, estimated=estimated_note(m))
        if e.verdict != "feasible":
            return e
        return _with_time(
            e, objective, time_budget_s, count_s, n_train_samples, native_hw, replicas
        )

    evals = []
    floor = max(objective.min_effective_batch, replicas)
    for m in measurements:
        e = at_batch(m, target_effective_batch)
        if e.verdict == "feasible":
            e = updates.settle(
                e,
                lambda t, m=m: at_batch(m, t),
                objective,
                fixed=fixed_effective_batch,
                floor=floor,
                min_epochs=want,
            )
        evals.append(e)
    feasible = [e for e in evals if e.verdict == "feasible" and (e.epochs_possible or 0) >= 1]
    if not feasible:
        no_fit.raise_budget(evals, budget_bytes, allowed, time_budget_s, budget_for)
    best, final, notes = _rank(evals, feasible, want, time_budget_s)
    return _choice(
        best,
        final,
        notes,
        epochs=min(best.epochs_possible, objective.max_epochs),
        budget_bytes=budget_bytes,
        allowed=allowed,
        n_train_samples=n_train_samples,
        native_hw=native_hw,
        replicas=replicas,
        weights=weights,
        requested_batch=target_effective_batch,
    )


def _rank(
    evals: Sequence[Evaluation],
    feasible: Sequence[Evaluation],
    want: int,
    time_budget_s: float | None,
) -> tuple[Evaluation, list[Evaluation], list[str]]:
    """The best score among those reaching `want` epochs (or among all that fit, with a note).

    Returns `(best, evaluations, notes)`: every evaluation with its final verdict and
    reason (the best "chosen", the rest of the pool "feasible", too slow ones "rejected").
    """
    good = [e for e in feasible if e.epochs_possible >= want]
    notes: list[str] = []
    pool = good
    if not good:
        pool = feasible
        notes.append(
            f"no candidate reaches {want} epochs in {no_fit.dur(time_budget_s)}; chose the best score anyway"
        )
    ranked = sorted(
        pool, key=lambda e: (-e.score, -e.epochs_possible, e.predicted_peak_bytes, e.candidate)
    )
    best = ranked[0]
    in_pool = {id(e) for e in pool}
    final = []
    for e in evals:
        if e is best:
            e = dataclasses.replace(e, verdict="chosen", reason=f"best score {e.score:.3f}")
        elif id(e) in in_pool:
            e = dataclasses.replace(e, reason=f"score {e.score:.3f} < {best.score:.3f}")
        elif e.verdict == "feasible":
            why = f"too slow: {e.epochs_possible} epochs in {no_fit.dur(time_budget_s)} (needs {want})"
            e = dataclasses.replace(e, verdict="rejected", reason=why)
        if e.estimated:  # never measured by a trial child: the table says so
            e = dataclasses.replace(e, reason=f"{e.reason} ({e.estimated})")
        final.append(e)
    return best, final, notes


def _choice(
    best: Evaluation,
    evaluations: Sequence[Evaluation],
    notes: list[str],
    *,
    epochs: int,
    budget_bytes: int,
    allowed: int,
    n_train_samples: int,
    native_hw: tuple[int, int] | None,
    replicas: int,
    weights: str,
    requested_batch: int,
) -> Choice:
    """The `Choice` for the best evaluation: plan fields, prediction and every verdict."""
    mb, accum = best.micro_batch, best.accumulation_steps
    steps = epoch_steps(
        crops_per_epoch(n_train_samples, native_hw, best.candidate.input_size),
        mb * replicas,
        accum,
    )
    if replicas > 1:
        notes.append(
            f"step time measured on one device; the all-reduce across {replicas} replicas "
            "is not included (docs/distributed.md)"
        )
    return Choice(
        candidate=best.candidate,
        micro_batch=mb,
        accumulation_steps=accum,
        effective_batch=mb * replicas * accum,
        normalization=normalization_for(mb, weights),
        epochs=epochs,
        predicted_peak_bytes=best.predicted_peak_bytes,
        budget_bytes=budget_bytes,
        allowed_bytes=allowed,
        headroom_bytes=budget_bytes - allowed,
        step_time_s=best.step_time_s,
        epoch_time_s=best.epoch_time_s,
        micro_batches_per_epoch=steps,
        score=best.score,
        line=best.line,
        evaluations=tuple(evaluations),
        warnings=tuple(notes + list(best.line.warnings if best.line else ())),
        replicas=replicas,
        target_batch=best.target_batch,
        requested_batch=requested_batch,
        updates=best.updates_possible,
        effective_batch_reason=best.batch_reason,
    )


def _with_time(e, obj, time_budget_s, count_s, n, native_hw, replicas=1) -> Evaluation:
    """Epoch time, epochs and updates in the time budget (`count_s`), and the score."""
    c = e.candidate
    # Each step takes one micro-batch on every replica at once: a global batch of mb x replicas.
    steps = epoch_steps(
        crops_per_epoch(n, native_hw, c.input_size), e.micro_batch * replicas, e.accumulation_steps
    )
    epoch_s = steps * e.step_time_s * (1 + obj.epoch_overhead)
    if time_budget_s is None:
        possible, factor = obj.max_epochs, 1.0
    else:
        possible = math.floor(time_budget_s / epoch_s) if epoch_s > 0 else obj.max_epochs
        factor = updates.epochs_factor(possible, obj)
    bought, bound = None, False
    if count_s is not None:
        per_epoch = steps // e.accumulation_steps
        bought = updates.updates_in(count_s, epoch_s, per_epoch, obj.max_epochs)
        bound = bought < obj.max_epochs * per_epoch  # else max_epochs limits them, as untimed
        factor *= updates.updates_factor(bought if bound else None, obj)
    score = score_bound(c, obj) * factor
    return dataclasses.replace(
        e,
        epoch_time_s=epoch_s,
        epochs_possible=possible,
        score=round(score, 6),
        updates_possible=bought,
        time_bound=bound,
    )
