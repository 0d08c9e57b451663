"""The memory model: peak = a + b * micro_batch, fitted to measured trials, then verified.

Measured on this machine (../shared/MEASURED.md): peak RSS is affine in the batch size
with a fixed part `a` of 1.0-1.6 GiB; a line through batch 1 and 4 predicted 8 and 16
within ~5%, a line through 1 and 2 is dominated by noise (+-50 MiB); peaks follow
batch x height x width. Pure: no TensorFlow, no processes; `verify` takes the
measurement as a callable so tests drive it with fakes.

API for `planner.make_plan`:
    fit_line(points) -> MemoryLine                       least squares over (mb, peak_bytes)
    MemoryLine.predict(mb) -> float
    allowed_bytes(budget_bytes, headroom_fraction) -> int
    largest_fitting(line, budget_bytes, headroom_fraction) -> int   0 if none fits
    verify(line, chosen_mb, measure, budget_bytes, headroom_fraction, max_steps)
        -> (micro_batch, line, history)   measure, and refit + step down while over budget
    scale_line(line, from_hw, to_hw) -> MemoryLine       pixel-ratio estimate, pruning only
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from planner.trials.spec import TrialResult
from trainer.units import gib

# A fit whose largest size is under this multiple of its smallest is mostly noise.
MIN_SPREAD = 3.0
# On an OOM in verification (no usable peak) the next size is this share of the last.
OOM_STEP_FACTOR = 0.75


@dataclass(frozen=True)
class MemoryLine:
    """peak_bytes = a + b * micro_batch.

    Args:
        a: fixed part in bytes (runtime, weights, optimizer state).
        b: bytes per sample of the micro-batch (activations, gradients of them).
        points: the (micro_batch, peak_bytes) points fitted; empty for an estimate.
        residual: root-mean-square residual of the fit in bytes.
        warnings: why the fit may be unreliable (points too close, slope <= 0).
        source: `"fit"`, or how an estimate was derived.
    """

    a: float
    b: float
    points: tuple[tuple[int, int], ...] = ()
    residual: float = 0.0
    warnings: tuple[str, ...] = ()
    source: str = "fit"

    def predict(self, micro_batch: float) -> float:
        return self.a + self.b * micro_batch

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["points"] = [list(p) for p in self.points]
        d["warnings"] = list(self.warnings)
        return d


def fit_line(points: Sequence[tuple[int, int | float]]) -> MemoryLine:
    """Least-squares line through (micro_batch, peak_bytes) points.

    Args:
        points: at least two distinct micro-batch sizes; repeated sizes are fine.

    Raises:
        ValueError: fewer than two distinct sizes.
    """
    pts = tuple((int(m), int(p)) for m, p in points)
    sizes = sorted({m for m, _ in pts})
    if len(sizes) < 2:
        raise ValueError(
            f"`points` must cover at least two distinct micro-batch sizes. Received: points={list(pts)}"
        )
    n = len(pts)
    mx = sum(m for m, _ in pts) / n
    my = sum(p for _, p in pts) / n
    sxx = sum((m - mx) ** 2 for m, _ in pts)
    b = sum((m - mx) * (p - my) for m, p in pts) / sxx
    a = my - b * mx
    residual = math.sqrt(sum((p - (a + b * m)) ** 2 for m, p in pts) / n)
    notes = []
    if sizes[-1] < MIN_SPREAD * sizes[0]:
        notes.append(
            f"micro-batch sizes {sizes[0]}..{sizes[-1]} are too close (need a spread of "
            f"{MIN_SPREAD:g}x, e.g. 1 and 4): measurement noise of ~50 MiB dominates the slope"
        )
    if b <= 0:
        notes.append(f"slope {b:.0f} bytes per sample is not positive: the points are noise")
    for note in notes:
        warnings.warn(note, stacklevel=2)
    return MemoryLine(a=a, b=b, points=pts, residual=residual, warnings=tuple(notes))


def allowed_bytes(budget_bytes: int, headroom_fraction: float) -> int:
    """The part of the budget a predicted peak may use: budget x (1 - headroom)."""
    if not 0 <= headroom_fraction < 1:
        raise ValueError(
            f"`headroom_fraction` must be in [0, 1). Received: headroom_fraction={headroom_fraction}"
        )
    return int(budget_bytes * (1 - headroom_fraction))


def largest_fitting(
    line: MemoryLine,
    budget_bytes: int,
    headroom_fraction: float = 0.1,
    *,
    max_micro_batch: int = 256,
) -> int:
    """Largest micro-batch whose predicted peak is <= budget x (1 - headroom); 0 if none.

    Args:
        line: the memory line.
        budget_bytes: the memory budget.
        headroom_fraction: share of the budget kept free. Defaults to `0.1` (covers the
            ~4% growth between step 3 and step 20 measured here, plus noise).
        max_micro_batch: upper bound, also used when the slope is not positive.
    """
    allowed = allowed_bytes(budget_bytes, headroom_fraction)
    if line.b <= 0:
        return max_micro_batch if line.predict(1) <= allowed else 0
    mb = min(max_micro_batch, math.floor((allowed - line.a) / line.b))
    while mb >= 1 and line.predict(mb) > allowed:  # guard against float rounding
        mb -= 1
    return max(mb, 0)


@dataclass(frozen=True)
class VerifyStep:
    """One measurement during verification and what was done about it."""

    micro_batch: int
    predicted_bytes: int
    allowed_bytes: int
    status: str
    peak_bytes: int | None
    action: str  # "accepted", "step down" or "gave up"
    reason: str
    # What the measuring child reported beside the peak (the verification run: updates,
    # validation batches, checkpoint bytes, seconds).
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def verify(
    line: MemoryLine,
    chosen_mb: int,
    measure: Callable[[int], TrialResult],
    budget_bytes: int,
    headroom_fraction: float = 0.1,
    max_steps: int = 3,
    over: Callable[[int, TrialResult], str | None] | None = None,
) -> tuple[int, MemoryLine, list[VerifyStep]]:
    """Measure the chosen micro-batch; while it exceeds the allowed budget, refit and step down.

    Args:
        line: the fitted line that chose `chosen_mb`.
        chosen_mb: the micro-batch to verify.
        measure: runs one trial at a micro-batch size (in the planner: one child).
        budget_bytes: the memory budget.
        headroom_fraction: see `largest_fitting`. Defaults to `0.1`.
        max_steps: most measurements to make. Defaults to `3`.
        over: why a measured size within `allowed` still does not hold for the planned
            run (its expected peak over the planned steps passes the budget), or `None`
            when it does; such a size steps down by one.

    Returns:
        `(micro_batch, line, history)`: the verified size (0 if none verified within
        `max_steps`, after an error/timeout, or when even 1 is over budget), the line
        refitted with every measured point, and one `VerifyStep` per measurement.
    """
    allowed = allowed_bytes(budget_bytes, headroom_fraction)
    history: list[VerifyStep] = []
    mb = chosen_mb
    for _ in range(max_steps):
        if mb < 1:
            break
        r = measure(mb)
        pred = int(line.predict(mb))
        step = dict(
            micro_batch=mb,
            predicted_bytes=pred,
            allowed_bytes=allowed,
            status=r.status,
            peak_bytes=r.peak_bytes,
            details=dict(r.details or {}),
        )
        if r.ok and r.peak_bytes is not None:
            line = _refit(line, mb, r.peak_bytes)
            too_long = over(mb, r) if over is not None and r.peak_bytes <= allowed else None
            if too_long is not None:
                nxt, why = mb - 1, too_long
            elif r.peak_bytes <= allowed:
                history.append(
                    VerifyStep(
                        **step,
                        action="accepted",
                        reason=f"measured {gib(r.peak_bytes)} <= allowed {gib(allowed)}",
                    )
                )
                return mb, line, history
            else:
                # Step from a line through the new point with the refitted slope: the
                # least-squares line may still pass below it.
                through = dataclasses.replace(line, a=r.peak_bytes - line.b * mb)
                nxt = min(
                    mb - 1,
                    largest_fitting(through, budget_bytes, headroom_fraction, max_micro_batch=mb),
                )
                why = (
                    f"measured {gib(r.peak_bytes)} > allowed {gib(allowed)} (predicted {gib(pred)})"
                )
        elif r.status == "oom":
            nxt = min(mb - 1, math.floor(mb * OOM_STEP_FACTOR))
            why = f"out of memory: {r.reason}"
        else:
            history.append(VerifyStep(**step, action="gave up", reason=f"{r.status}: {r.reason}"))
            return 0, line, history
        history.append(
            VerifyStep(**step, action="step down", reason=f"{why}; next micro-batch {max(nxt, 0)}")
        )
        mb = nxt
    return 0, line, history


def step_up(
    line: MemoryLine,
    verified_mb: int,
    verified_peak: int,
    measure: Callable[[int], TrialResult],
    budget_bytes: int,
    headroom_fraction: float,
    *,
    max_micro_batch: int,
    use_below: float,
    growth: float,
    over: Callable[[int, TrialResult], str | None] | None = None,
) -> tuple[int, int, VerifyStep | None]:
    """After a verified size, try one larger size when the verified run left the budget unused.

    The choice before verification held the train step to the budget less an
    *estimate* of what a run adds; once a run is measured that estimate is replaced
    by the real thing. When the verified peak with the long-run growth added uses
    less than `use_below` of the budget, the size `line` allows (its slope
    through the verified point) is measured once. Its result
    is kept only when it is itself within budget x (1 - headroom): a failed step up
    costs one child, never the verified plan.

    Args:
        line: a line with the measured per-sample slope (the train-step trials'); it
            is moved through the verified point.
        verified_mb: the verified micro-batch.
        verified_peak: its measured peak, bytes.
        measure: runs one verification at a micro-batch size.
        budget_bytes: the memory budget.
        headroom_fraction: share of the budget the run may not use.
        max_micro_batch: the largest useful size (the effective batch per replica, the
            micro-batch cap).
        use_below: step up only when `verified_peak x (1 + growth)` is below this
            share of the budget.
        growth: what a long run adds to the verified peak (`presets.RUN_GROWTH`): the
            trigger only; `over` holds the larger size to the planned run's own rise.
        over: as in `verify`: the larger size is refused when it says why.

    Returns:
        `(micro_batch, peak_bytes, step)`: the larger size and its peak when it was
        measured within budget, else the verified ones; `step` is the measurement
        made (`None` when none was worth making).
    """
    if verified_peak * (1 + growth) >= use_below * budget_bytes:
        return verified_mb, verified_peak, None
    through = dataclasses.replace(line, a=verified_peak - line.b * verified_mb)
    target = largest_fitting(
        through, budget_bytes, headroom_fraction, max_micro_batch=max_micro_batch
    )
    if target <= verified_mb:
        return verified_mb, verified_peak, None
    allowed = allowed_bytes(budget_bytes, headroom_fraction)
    r = measure(target)
    fields = dict(
        micro_batch=target,
        predicted_bytes=int(through.predict(target)),
        allowed_bytes=allowed,
        status=r.status,
        peak_bytes=r.peak_bytes,
        details=dict(r.details or {}),
    )
    share = verified_peak * (1 + growth) / budget_bytes
    fits = r.ok and r.peak_bytes is not None and r.peak_bytes <= allowed
    too_long = over(target, r) if over is not None and fits else None  # as in `verify`
    if fits and too_long is None:
        why = (
            f"micro-batch {verified_mb} used {share:.0%} of the budget with growth; "
            f"measured {gib(r.peak_bytes)} <= allowed {gib(allowed)}"
        )
        return target, r.peak_bytes, VerifyStep(**fields, action="accepted", reason=why)
    got = gib(r.peak_bytes) if r.ok and r.peak_bytes is not None else f"{r.status} ({r.reason})"
    why = (
        f"stepping up from {verified_mb}: {too_long}; keeping {verified_mb}"
        if too_long is not None
        else f"stepping up from {verified_mb}: {got} over allowed {gib(allowed)}; keeping {verified_mb}"
    )
    return verified_mb, verified_peak, VerifyStep(**fields, action="step up refused", reason=why)


def _refit(line: MemoryLine, mb: int, peak: int) -> MemoryLine:
    points = (*line.points, (mb, peak))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the first fit already warned about its points
        try:
            return fit_line(points)
        except ValueError:  # an estimate without points: keep its slope, pass through the point
            return dataclasses.replace(line, a=peak - line.b * mb, points=points, source="verify")


def scale_line(line: MemoryLine, from_hw: tuple[int, int], to_hw: tuple[int, int]) -> MemoryLine:
    """Estimate the line at another input size: the per-sample part scales with pixels.

    Peaks follow micro-batch x height x width (equal pixel counts gave equal peaks
    within 1% here); the fixed part does not depend on the input. An estimate for
    pruning only: the plan's micro-batch always comes from a line fitted at its size.
    """
    ratio = (to_hw[0] * to_hw[1]) / (from_hw[0] * from_hw[1])
    return MemoryLine(
        a=line.a,
        b=line.b * ratio,
        points=(),
        residual=line.residual,
        warnings=("estimate scaled by pixel ratio; for pruning only",),
        source=f"scaled from {from_hw[0]}x{from_hw[1]} by pixel ratio {ratio:.3g}",
    )
