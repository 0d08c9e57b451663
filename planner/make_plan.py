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

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner import measure_order as order
from planner.build import build_plan
from planner.measure import measure_candidates
from planner.request import Log, PlanContext, PlanRequest, quiet, step_headroom
from planner.search import candidates as cand
from planner.search import presets
from planner.search.choice import CandidateMeasurement, Choice
from planner.trials import cache as trial_cache
from planner.trials import trial
from planner.trials.spare import spare_children
from planner.verified_choice import choose_and_verify, time_from_verification
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
    # A trial child's trace starts the next child, which imports TensorFlow meanwhile
    # (planner.trials.spare); the first one starts now, while the dataset is scanned.
    # An unused one is killed on the way out.
    with spare_children():
        trial.start_spare(budget["device"], int(budget["bytes"]))
        return _plan(request, say, started, clock, hw, budget)


def _plan(
    request: PlanRequest,
    say: Log,
    started: float,
    clock: Callable[[], float],
    hw: dict[str, Any],
    budget: dict[str, Any],
) -> PlanResult:
    """`plan_from_request` after the probe: scan, measure, choose and verify, build."""
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
    measured, traces = measure_candidates(kept, ctx, children, cache)
    latest = {m.candidate: m for m in pruned + measured}  # each candidate's last record

    def on_drop(
        ms: list[CandidateMeasurement], failed: cand.Candidate
    ) -> list[CandidateMeasurement]:
        """Measure the candidates skipped as unable to beat `failed`, now that it failed,
        and the new leader's second size (it may have been measured at one size)."""
        nonlocal traces
        named = [m.candidate for m in ms if order.lost_to(m, failed)]
        if named:
            ctx.say(f"measuring {len(named)} candidate(s) skipped as unable to beat {failed.label}")
        rest = [m for m in ms if m.candidate not in named]
        more, more_traces = measure_candidates(named, ctx, children, cache, known=rest)
        traces += more_traces
        latest.update({m.candidate: m for m in more})
        redone = {m.candidate for m in more}  # a known leader may come back with a new size
        return [m for m in rest if m.candidate not in redone] + more

    choice, verify_steps = choose_and_verify(list(latest.values()), ctx, children, on_drop)
    measurements = list(latest.values())
    choice, timed = time_from_verification(choice, verify_steps, measurements, ctx)
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
            "planning": {
                **order.planning_evidence(ctx, cache, measurements, verify_steps),
                **({"time_from_verification": timed} if timed else {}),
            },
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
