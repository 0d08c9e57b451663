"""`make_plan`: probe, scan, measure candidates in child processes, choose, verify, write a plan.

The stages are the modules of this package; this one only orders them and records
what each found in the plan's `evidence`, so a plan explains itself:

    hardware.probe -> dataset.scan -> candidates (+ analytic prune) -> trial children
    -> search.choose (memory line + objective) -> memory_model.verify (one more child)
    -> trainer.plan.Plan

`make_plan` takes keyword arguments; `plan_from_request` takes them as a
`planner.request.PlanRequest`. Choosing and verifying live in `planner.verified_choice`,
building the plan document in `planner.build`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner import measure_order as order
from planner.build import build_plan
from planner.request import Log, PlanContext, PlanRequest, quiet, step_headroom
from planner.search import candidates as cand
from planner.search import presets
from planner.search.choice import CandidateMeasurement, Choice, Evaluation
from planner.search.choose import score_bound
from planner.trials import cache as trial_cache
from planner.trials.cache import TrialCache
from planner.trials.spec import TrialResult, TrialSpec
from planner.trials.trial import measure_each, measure_one
from planner.verified_choice import choose_and_verify
from trainer.data.pairs import Pair
from trainer.data.splits import split_pairs
from trainer.plan import DataSpec, Plan, save_plan
from trainer.train.device import pin_env
from trainer.units import gib

__all__ = ["Log", "PlanRequest", "PlanResult", "make_plan", "plan_from_request"]


@dataclass
class PlanResult:
    """The plan and how it was made: the search's choice, planning time and child count."""

    plan: Plan
    choice: Choice
    planning_time_s: float
    children: int
    traces: int
    fingerprint: dict[str, Any]
    hardware: dict[str, Any]


def make_plan(
    data: str | Path,
    *,
    images: str = "images",
    masks: str = "masks",
    val: str | Path | None = None,
    budget_memory: int | None = None,
    budget_time_s: float | None = None,
    backbones: Sequence[str] | None = None,
    sizes: Sequence[int] | None = None,
    precisions: Sequence[str] | None = None,
    effective_batch: int | None = None,
    devices: int | None = 1,
    workers: int = 1,
    headroom: float = presets.HEADROOM,
    weights: str = "none",
    out: str | Path | None = None,
    count_planning_time: bool = False,
    log: Log | None = None,
    trial_timeout_s: float = presets.TRIAL_TIMEOUT_S,
    use_cache: bool = True,
    data_options: dict[str, Any] | None = None,
) -> PlanResult:
    """Measure this machine on this dataset and return (and optionally write) a plan.

    Args:
        data: dataset root with the image and mask folders.
        images, masks: folder names under `data`.
        val: a separate validation root, or `None`: the trainer splits `val_fraction` off.
        budget_memory: bytes the run may use; `None` (default): the probe's budget.
        budget_time_s: wall time for training; `None` (default): no limit.
        backbones, sizes, precisions: restrict the candidates; `None`: the presets.
        effective_batch: micro-batch x replicas x accumulation to reach, kept exactly.
            `None` (default): the planner decides: 16, lower when a short time budget
            buys too few optimizer updates (docs/planning.md, "The objective").
        devices: GPUs per worker for data-parallel training (docs/distributed.md); the
            micro-batch is per device and fits the smallest one. `None`: every visible
            GPU. Defaults to `1`: one device, the probe's budget.
        workers: hosts of a multi-worker run (assumed to match this one). Defaults to `1`.
        headroom: share of the budget kept free. Defaults to `0.1`.
        weights: encoder weights for the plan (`none`, `imagenet`, a path).
        out: write the plan here (atomically) when given.
        count_planning_time: subtract planning time from `budget_time_s` (`train --auto`).
        log: receives one line per stage (progress for the CLI).
        trial_timeout_s: time limit of each trial child.
        use_cache: reuse measurements made before on this machine and store new ones
            (`planner.trials.cache`). `False`: `--no-cache`.
        data_options: plan `data` fields the user set (labels, normalization); the
            scan reads the masks with them.
    """
    request = PlanRequest(
        data,
        images=images,
        masks=masks,
        val=val,
        budget_memory=budget_memory,
        budget_time_s=budget_time_s,
        backbones=backbones,
        sizes=sizes,
        precisions=precisions,
        effective_batch=effective_batch,
        devices=devices,
        workers=workers,
        headroom=headroom,
        weights=weights,
        out=out,
        count_planning_time=count_planning_time,
        trial_timeout_s=trial_timeout_s,
        use_cache=use_cache,
        data_options=data_options,
    )
    return plan_from_request(request, log=log)


def plan_from_request(
    request: PlanRequest, *, log: Log | None = None, clock: Callable[[], float] = time.monotonic
) -> PlanResult:
    """`make_plan` for a `PlanRequest`: every stage in order; writes `request.out` if given.

    Args:
        request: what to plan.
        log: receives one line per stage. `None` (default): nothing is logged.
        clock: monotonic seconds for planning time and the time budget.
    """
    started = clock()
    say = log or quiet
    hw, budget = _probe_budget(request, say)
    fp, n_train = _scan(request, say)
    ctx = PlanContext(
        request,
        hw,
        budget,
        fp,
        n_train,
        step_headroom=step_headroom(budget, request.headroom),
        say=say,
        started=started,
        clock=clock,
    )
    children: set[int] = set()
    cache = trial_cache.for_plan(hw, ctx.device, request.use_cache)
    pruned, kept = _candidates(ctx)
    measured, traces = _measure(kept, ctx, children, cache)
    latest = {m.candidate: m for m in pruned + measured}  # each candidate's last record

    def on_drop(
        ms: list[CandidateMeasurement], failed: cand.Candidate
    ) -> list[CandidateMeasurement]:
        """Measure the candidates skipped as unable to beat `failed`, now that it failed."""
        nonlocal traces
        named = [m.candidate for m in ms if order.lost_to(m, failed)]
        if not named:
            return ms
        ctx.say(f"measuring {len(named)} candidate(s) skipped as unable to beat {failed.label}")
        rest = [m for m in ms if m.candidate not in named]
        more, more_traces = _measure(named, ctx, children, cache, known=rest)
        traces += more_traces
        latest.update({m.candidate: m for m in more})
        return rest + more

    choice, verify_steps = choose_and_verify(list(latest.values()), ctx, children, on_drop)
    measurements = list(latest.values())
    traces += sum(1 for s in verify_steps if not s.details.get("cached"))  # one trace each
    planning_time = ctx.elapsed()
    plan = build_plan(
        ctx,
        choice,
        verify_steps,
        measurements,
        planning_time_s=planning_time,
        children=len(children),
        traces=traces,
    )
    plan = plan.replace(
        evidence={
            **plan.evidence,
            "planning": order.planning_evidence(ctx, cache, measurements, verify_steps),
        }
    )
    if request.out is not None:
        save_plan(plan, request.out)
    return PlanResult(plan, choice, planning_time, len(children), traces, fp, hw)


def _probe_budget(request: PlanRequest, say: Log) -> tuple[dict[str, Any], dict[str, Any]]:
    """The hardware report and the budget: the probe's, per replica, or the user's bytes."""
    from planner import hardware

    out_dir = Path(request.out).parent if request.out else Path(".")
    hw = hardware.probe(out_dir=out_dir, with_tensorflow=False)
    budget = dict(hw["budget"])
    if request.devices != 1 or request.workers != 1:  # the smallest device's budget decides
        from planner.hardware.replicas import replica_budget

        budget = replica_budget(hw, request.devices, request.workers)
    user = request.budget_memory
    if user is not None:
        if user > budget["bytes"]:
            say(
                f"warning: --budget-memory {gib(user)} is more than this machine's "
                f"budget {gib(budget['bytes'])} ({budget['derivation']})"
            )
        budget.update(bytes=int(user), source="user", derivation="--budget-memory")
    say(f"budget: {gib(budget['bytes'])} on {budget['device']} ({budget['derivation']})")
    if budget["device"] == "gpu" and budget.get("device_uuids"):
        # Every trial child (and `train --auto` here) sees only the budgeted GPUs (docs/gpu.md).
        os.environ.update(pin_env(budget["device_uuids"]))
    return hw, budget


def _scan(request: PlanRequest, say: Log) -> tuple[dict[str, Any], int]:
    """The dataset's fingerprint (refused when nothing is trainable) and its training count."""
    from planner.scan import dataset
    from planner.scan.labels import scan_options

    labels = scan_options(request.data_options or {})
    fp = dataset.scan(Path(request.data), images=request.images, masks=request.masks, **labels)
    dataset.require_trainable(fp)
    size = fp["image_size"]["median"]
    n_train = _train_count(fp, request.val)
    say(f"dataset: {fp['pairs']} pairs ({n_train} for training), {size[0]}x{size[1]}, {fp['task']}")
    return fp, n_train


def _candidates(ctx: PlanContext) -> tuple[list[CandidateMeasurement], list[cand.Candidate]]:
    """The candidates: the pruned ones with their estimate and reason, and the ones to measure."""
    req, device = ctx.request, ctx.device
    bf16 = (
        bool(ctx.hardware.get("cpu", {}).get("bfloat16_fast"))
        if device == "cpu"
        else _gpu_bf16(ctx.hardware)
    )
    cands = cand.default_candidates(
        ctx.native_hw,
        device=device,
        bf16=bf16,
        backbones=req.backbones,
        sides=req.sizes,
        precisions=req.precisions or _gpu_precision(ctx),
    )
    kept, pruned = cand.prune(
        cands,
        budget_bytes=ctx.budget_bytes,
        headroom=req.headroom,
        num_classes=ctx.num_classes,
        device=device,
    )
    for p in pruned:
        ctx.say(f"pruned {p.candidate.label}: {p.reason}")
    records = [
        CandidateMeasurement(p.candidate, pruned_reason=p.reason, estimate_bytes=p.estimate_bytes)
        for p in pruned
    ]
    return records, kept


def _measure(
    kept: Sequence[cand.Candidate],
    ctx: PlanContext,
    children: set[int],
    cache: TrialCache | None,
    *,
    known: Sequence[CandidateMeasurement] = (),
) -> tuple[list[CandidateMeasurement], int]:
    """Measure the candidates best first; skip those that cannot win or do not fit in time.

    Candidates go in order of their best possible score (`search.choose.score_bound`:
    the objective with every epoch it wants, whatever memory allows). Once a measured
    candidate is feasible and scores above a candidate's bound, that candidate cannot
    be chosen and is recorded "not measured: cannot beat ..." instead. Under a time
    budget, `presets.PLANNING_SHARE` of it stops new children (`fitplan plan`); under
    `--auto` the planning cap (`PlanContext.planning_left`) decides how many children
    fit (`measure_order.sizes_in_time`). Until one candidate is feasible, measuring goes on: a plan
    needs one. `known`: candidates measured before, to beat. Returns the measurements
    and the number of graph traces; `children` receives the process ids.
    """
    budget_time = ctx.request.budget_time_s
    queue = sorted(kept, key=lambda c: -score_bound(c))
    out: list[CandidateMeasurement] = []
    traces = 0
    best: Evaluation | None = order.best_measured(known, ctx)
    for c in queue:
        bound = score_bound(c)
        reason = None
        sizes = presets.TRIAL_MICRO_BATCHES
        spec, norm = _trial_spec(c, ctx)
        if best is not None and round(bound, 6) < best.score:  # `choose` rounds scores
            reason = (
                f"{order.CANNOT_BEAT} {best.candidate.label} "
                f"(score at most {bound:.3f} < {best.score:.3f})"
            )
        elif (
            best is not None
            and budget_time is not None
            and (ctx.elapsed() > presets.PLANNING_SHARE * budget_time)
        ):
            reason = (
                f"not measured: planning already used {presets.PLANNING_SHARE:.0%} "
                "of the time budget"
            )
        elif ctx.planning_left() is not None:
            sizes, reason = order.sizes_in_time(spec, ctx, cache, out, must=best is None)
        if reason is not None:
            out.append(CandidateMeasurement(c, pruned_reason=reason))
            ctx.say(f"skipped {c.label}: {reason}")
            continue
        m = _measure_candidate(c, spec, norm, sizes, ctx, cache)
        children |= {r.child_pid for r in m.trials if r.child_pid}
        traces += sum(r.traces or 0 for r in m.trials if not r.details.get("cached"))
        out.append(m)
        best = order.best_measured([*known, *out], ctx)
    return out, traces


def _trial_spec(c: cand.Candidate, ctx: PlanContext) -> tuple[TrialSpec, str]:
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


def _measure_candidate(
    c: cand.Candidate,
    spec: TrialSpec,
    norm: str,
    sizes: Sequence[int],
    ctx: PlanContext,
    cache: TrialCache | None,
) -> CandidateMeasurement:
    """Trial children at `sizes` (and one between, after an out-of-memory)."""
    ctx.say(
        f"measuring {c.label} at micro-batches {list(sizes)} (one child each, BatchNorm {norm})..."
    )
    spec = dataclasses.replace(spec, micro_batches=tuple(sizes))
    limits = dict(
        timeout_s=ctx.request.trial_timeout_s, memory_limit_bytes=ctx.budget_bytes, cache=cache
    )
    results = measure_each(spec, **limits)
    between = _size_between(results) if len(sizes) > 1 else None
    if between is not None:
        ctx.say(f"  out of memory at {results[-1].micro_batch}: measuring {between} too")
        mid = measure_one(spec, between, **limits)
        results = sorted([*results, mid], key=lambda r: r.micro_batch)
    if len(sizes) == 1:
        results = order.with_analytic_slope(c, results, ctx)
    ctx.say("  " + "; ".join(order.trial_line(r) for r in results))
    return CandidateMeasurement(c, trials=tuple(results), normalization=norm)


def _size_between(results: Sequence[TrialResult]) -> int | None:
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


def _train_count(fp: dict[str, Any], val: str | Path | None) -> int:
    if val is not None:
        return int(fp["pairs"])
    # The trainer's own split rule, on the scan's good pairs: the same count it will train on.
    pairs = [Pair(k, Path(k), Path(k)) for k in fp["pair_keys"]]
    train, _ = split_pairs(pairs, DataSpec(path=".").val_fraction)
    return len(train)


def _gpu_precision(ctx: PlanContext) -> tuple[str, ...] | None:
    """On a GPU, the one policy its compute capability calls for (the probe's advice:
    below 7.0 float32, not mixed_float16); `None` elsewhere (the presets decide)."""
    policy = (ctx.hardware.get("precision_advice") or {}).get("policy")
    return (policy,) if ctx.device == "gpu" and policy else None


def _gpu_bf16(hw: dict[str, Any]) -> bool:
    return "bfloat16" in str(hw.get("precision_advice", {}).get("policy", ""))
