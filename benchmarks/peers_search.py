"""The batch-size searches users reach for today, written from their sources, TF-free.

Each search takes `measure(micro_batch) -> Probe` (one trial: in `benchmarks/peers.py` one
fresh fitplan trial child under the memory budget; in tests a fake) and returns a
`SearchResult`: the size it would train with, every probe it made (trials, OOMs, their
wall time), and why it gave up if it did. Only the search logic is the peer's; what a
trial is (a child running the candidate's train step on synthetic tensors, `"oom"` when
its RSS crosses the budget) is fitplan's, the same for every peer.

Sources read (December 2026 snapshots), and where this code departs from them:

- Lightning `BatchSizeFinder` / `Tuner.scale_batch_size`:
  https://github.com/Lightning-AI/pytorch-lightning/blob/master/src/lightning/pytorch/tuner/batch_size_scaling.py
  (`_run_power_scaling`, `_run_binsearch_scaling`, `_adjust_batch_size`; snapshot
  7f0c343, 2026-07-20). Defaults `steps_per_trial=3, init_val=2, max_trials=25,
  margin=0.05, max_val=8192`; the margin (binsearch only) arrived in Lightning 2.6.0
  (PR #21163). Not modelled: `_adjust_batch_size` also stops growing once the batch size
  reaches the dataset's length (a sample count; the datasets here give more crops per
  epoch than any size that fits).
- Accelerate `find_executable_batch_size`:
  https://github.com/huggingface/accelerate/blob/main/src/accelerate/utils/memory.py
  (snapshot 16cb6eb, 2026-07-24). Issue 13 asks for start 64, halve on OOM (the
  behaviour before Accelerate 1.9.0); upstream now starts at 128 and multiplies by 0.9
  (PR #3684, "Stop Halving My Batch!", v1.9.0): `accelerate_0.9` runs that from 64.
- Ultralytics AutoBatch:
  https://github.com/ultralytics/ultralytics/blob/main/ultralytics/utils/autobatch.py
  Profiles sizes 1, 2, 4, 8, 16 (1..64 when the device has >= 16 GiB), fits a line and
  solves it for `fraction` (0.6) of the free memory, clamps below the first failed size,
  falls back to the default batch 16 outside [1, 1024] or on any error. `ultralytics`
  is the line in (batch, memory) that issue 13 names (`b = int((f * fraction - p[1]) /
  p[0])`, ultralytics 8.0-8.2, YOLOv5); `ultralytics_loglog` is today's code (8.3: the
  line in (log batch, log memory) through increasing points below the total, rounded).
  Free memory here is the budget. Upstream's profile reports memory in GB (1e9) against
  free memory in GiB; both are bytes here. Upstream on a CPU returns 16 without
  profiling; here the budget plays the GPU.
- OpenNMT-tf `_auto_tune_batch_size`:
  https://github.com/OpenNMT/OpenNMT-tf/blob/master/opennmt/runner.py (v2.32.0): a
  binary search in fresh processes of `sample_iterations=5` steps between 1 and 512 for
  `batch_type: examples`, stopping when the range is <= `min_range` (16); any failure
  (OOM, error, timeout) lowers the top; the size found is scaled by `scaling_factor`.
  Issue 13 says 0.8 (the default from v2.0 to v2.17); since v2.18.0 it is 0.7
  (`batch_size_autotune_scale`). With `effective_batch_size` set, OpenNMT caps the top
  at it; not set here (at 16 it would search nothing and fail).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Probe:
    """One trial at one micro-batch size.

    Args:
        micro_batch: the size tried.
        status: `"ok"`, `"oom"`, `"timeout"` or `"error"` (`planner.trials.spec.TrialResult`).
        peak_bytes: the child's peak (ok) or the RSS when the budget was crossed (oom).
        wall_s: seconds the trial took when it was measured (also when reused from the
            memo: planning time counts what the trial cost, not what the benchmark paid).
        reused: taken from this invocation's memo instead of a new child.
    """

    micro_batch: int
    status: str
    peak_bytes: int | None = None
    wall_s: float = 0.0
    reused: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return {
            "micro_batch": self.micro_batch,
            "status": self.status,
            "peak_bytes": self.peak_bytes,
            "wall_s": round(self.wall_s, 2),
            "reused": self.reused,
        }


Measure = Callable[[int], Probe]


@dataclass
class SearchResult:
    """What a search chose and what it cost.

    Args:
        micro_batch: the size it would train with; `None` when it gave up (`error`).
        probes: every trial, in order.
        error: why it gave up (the upstream exception's message), or `None`.
        note: anything upstream would have logged (fallbacks, clamps).
    """

    micro_batch: int | None
    probes: list[Probe] = field(default_factory=list)
    error: str | None = None
    note: str = ""

    @property
    def trials(self) -> int:
        return len(self.probes)

    @property
    def ooms(self) -> int:
        return sum(p.status == "oom" for p in self.probes)

    @property
    def planning_s(self) -> float:
        return sum(p.wall_s for p in self.probes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "micro_batch": self.micro_batch,
            "trials": self.trials,
            "ooms": self.ooms,
            "planning_s": round(self.planning_s, 2),
            "error": self.error,
            "note": self.note,
            "probes": [p.to_dict() for p in self.probes],
        }


class _Recorder:
    """Wraps `measure`, keeping every probe (the searches below only see ok / OOM)."""

    def __init__(self, measure: Measure):
        self.measure, self.probes = measure, []

    def __call__(self, mb: int) -> Probe:
        p = self.measure(mb)
        self.probes.append(p)
        return p


class _NotOom(RuntimeError):
    """A failure the upstream search does not catch (it re-raises): the search ends."""


def _oom_or_raise(p: Probe) -> bool:
    """True for an OOM, False for ok; an error or timeout ends Lightning's/Accelerate's search."""
    if p.status in ("ok", "oom"):
        return p.status == "oom"
    raise _NotOom(f"trial at micro-batch {p.micro_batch}: {p.status} (not out of memory)")


def lightning_power(
    measure: Measure, *, init_val: int = 2, max_trials: int = 25, max_val: int = 8192
) -> SearchResult:
    """Lightning's `mode="power"`: double until an OOM, then halve once and stop."""
    rec = _Recorder(measure)
    new_size = init_val
    any_success = False
    try:
        for i in range(max_trials):
            if new_size >= max_val:
                break
            if new_size < 1:  # upstream would build a DataLoader of batch size 0 and fail
                raise _NotOom("no batch size fits: reached 0")
            if not _oom_or_raise(rec(new_size)):
                last_successful_size = new_size
                if i + 1 >= max_trials:
                    new_size = last_successful_size
                    break
                new_size = min(int(new_size * 2.0), max_val)
                any_success = True
            else:
                new_size = int(new_size * 0.5)
                if any_success:
                    break
    except _NotOom as exc:
        return SearchResult(None, rec.probes, error=str(exc))
    return SearchResult(new_size, rec.probes)


def lightning_binsearch(
    measure: Measure,
    *,
    init_val: int = 2,
    max_trials: int = 25,
    margin: float = 0.05,
    max_val: int = 8192,
) -> SearchResult:
    """Lightning's `mode="binsearch"`: double until an OOM, bisect, then take `margin` off."""
    rec = _Recorder(measure)
    low, high, count = 1, None, 0
    new_size = init_val
    try:
        while True:
            if new_size >= max_val:
                break
            if not _oom_or_raise(rec(new_size)):
                last_successful_size = new_size
                count += 1
                if count >= max_trials:
                    new_size = last_successful_size
                    break
                low = new_size
                if high:
                    if high - low <= 1:
                        break
                    nxt = (high + low) // 2
                else:
                    nxt = min(int(new_size * 2.0), max_val)
                changed = nxt != new_size
                new_size = nxt
                if not changed:
                    break
            else:
                high = new_size
                new_size = (high + low) // 2
                if high - low <= 1:  # upstream returns `low` untried when 2 fails: 1
                    break
    except _NotOom as exc:
        return SearchResult(None, rec.probes, error=str(exc))
    note = ""
    if margin > 0:
        reduced = max(1, int(new_size * (1 - margin)))
        if reduced != new_size:
            note = f"margin {margin:.0%}: {new_size} -> {reduced}"
            new_size = reduced
    return SearchResult(new_size, rec.probes, note=note)


def accelerate(
    measure: Measure, *, starting_batch_size: int = 64, factor: float = 0.5
) -> SearchResult:
    """Accelerate's `find_executable_batch_size`: run; on OOM `int(size * factor)`; 0 fails."""
    rec = _Recorder(measure)
    batch_size = starting_batch_size
    try:
        while True:
            if batch_size == 0:
                raise _NotOom("No executable batch size found, reached zero.")
            if not _oom_or_raise(rec(batch_size)):
                return SearchResult(batch_size, rec.probes)
            batch_size = int(batch_size * factor)
    except _NotOom as exc:
        return SearchResult(None, rec.probes, error=str(exc))


def _autobatch_sizes(total_bytes: int) -> list[int]:
    return [1, 2, 4, 8, 16] if total_bytes < 16 * 2**30 else [1, 2, 4, 8, 16, 32, 64]


def ultralytics(
    measure: Measure,
    *,
    budget_bytes: int,
    fraction: float = 0.6,
    batch_size: int = 16,
    loglog: bool = False,
) -> SearchResult:
    """Ultralytics AutoBatch: profile 1..16, fit, solve for `fraction` of the free memory.

    Args:
        budget_bytes: the device's total and free memory (`t` and `f` upstream).
        fraction: share of the free memory to aim at. Defaults to `0.6`.
        batch_size: the default used when the fit fails or leaves [1, 1024]. Defaults to `16`.
        loglog: today's fit in log-log space (ultralytics 8.3) instead of the straight line.
    """
    rec = _Recorder(measure)
    sizes = _autobatch_sizes(budget_bytes)
    # profile() catches every exception per size and records None.
    results = [p.peak_bytes if (p := rec(b)).ok else None for b in sizes]
    t = f = float(budget_bytes)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # np.RankWarning with too few points
            if loglog:
                xy = [
                    (x, y)
                    for i, (x, y) in enumerate(zip(sizes, results, strict=True))
                    if y and 0 < y < t and (i == 0 or not results[i - 1] or y > results[i - 1])
                ]
                fit_x, fit_y = zip(*xy, strict=True) if xy else ([], [])
                p = np.polyfit(np.log(fit_x), np.log(fit_y), deg=1)
                b = round(float(np.exp((np.log(f * fraction) - p[1]) / p[0])))
            else:
                y = [x for x in results if x]
                p = np.polyfit(sizes[: len(y)], y, deg=1)
                b = int((f * fraction - p[1]) / p[0])
        note = ""
        if None in results:
            i = results.index(None)
            if b >= sizes[i]:
                note = f"fit gave {b} >= first failed size {sizes[i]}: prior safe point"
                b = sizes[max(i - 1, 0)]
        if b < 1 or b > 1024:
            note = f"batch={b} outside safe range, using default batch-size {batch_size}"
            b = batch_size
    except Exception as exc:  # upstream: "error detected: ..., using default batch-size"
        b, note = batch_size, f"error detected: {type(exc).__name__}: {exc}; default {batch_size}"
    return SearchResult(b, rec.probes, note=note)


def opennmt(
    measure: Measure,
    *,
    min_batch_size: int = 1,
    max_batch_size: int = 512,
    min_range: int = 16,
    scaling_factor: float = 0.8,
) -> SearchResult:
    """OpenNMT-tf's `_auto_tune_batch_size` for `batch_type: examples`; any failure lowers the top."""
    rec = _Recorder(measure)
    absolute_min = min_batch_size
    while max_batch_size - min_batch_size > min_range:
        size = (max_batch_size + min_batch_size) // 2
        if rec(size).ok:
            min_batch_size = size
        else:
            max_batch_size = size - 1
    if min_batch_size == absolute_min:
        return SearchResult(
            None,
            rec.probes,
            error="Batch size autotuning failed: all training attempts exited with an error",
        )
    return SearchResult(max(int(scaling_factor * min_batch_size), absolute_min), rec.probes)


@dataclass(frozen=True)
class Strategy:
    """A peer: its search, and the steps one of its trials runs (warm-up, measured).

    The trial child needs at least one warm-up and one measured step; a peer's `n`
    steps per trial become 1 warm-up (the first step traces) + `n - 1` measured.
    """

    name: str
    search: Callable[..., SearchResult]
    steps: tuple[int, int]
    label: str
    needs_budget: bool = False

    def run(self, measure: Measure, budget_bytes: int) -> SearchResult:
        kw = {"budget_bytes": budget_bytes} if self.needs_budget else {}
        return self.search(measure, **kw)


def _partial(fn: Callable[..., SearchResult], **fixed: Any) -> Callable[..., SearchResult]:
    def call(measure: Measure, **kw: Any) -> SearchResult:
        return fn(measure, **fixed, **kw)

    return call


# Lightning: steps_per_trial=3. Accelerate has no trial length (its trial is the training
# function; an OOM shows in the first steps): 3, sharing Lightning's children.
# Ultralytics: profile(n=3) before 8.3, n=1 since (2 is the child's minimum): 3.
# OpenNMT-tf: sample_iterations=5.
STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("lightning_power", lightning_power, (1, 2), "Lightning BatchSizeFinder, power"),
        Strategy(
            "lightning_binsearch",
            lightning_binsearch,
            (1, 2),
            "Lightning BatchSizeFinder, binsearch, margin 5%",
        ),
        Strategy(
            "accelerate", accelerate, (1, 2), "Accelerate find_executable_batch_size, 64, halve"
        ),
        Strategy(
            "accelerate_0.9",
            _partial(accelerate, factor=0.9),
            (1, 2),
            "Accelerate (>= 1.9), 64, x0.9",
        ),
        Strategy(
            "ultralytics",
            ultralytics,
            (1, 2),
            "Ultralytics AutoBatch, line, 60%",
            needs_budget=True,
        ),
        Strategy(
            "ultralytics_loglog",
            _partial(ultralytics, loglog=True),
            (1, 2),
            "Ultralytics AutoBatch (>= 8.3), log-log, 60%",
            needs_budget=True,
        ),
        Strategy("opennmt", opennmt, (1, 4), "OpenNMT-tf auto-tune, binary search x0.8"),
    )
}
# What issue 13 lists; the two current-upstream variants run on request (--strategies).
DEFAULT_STRATEGIES = (
    "lightning_power",
    "lightning_binsearch",
    "accelerate",
    "ultralytics",
    "opennmt",
    "fitplan",
)
