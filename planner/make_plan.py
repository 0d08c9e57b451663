"""`make_plan`: probe, scan, measure candidates in child processes, choose, verify, write a plan.

The stages are the modules of this package; this one only orders them and records
what each found in the plan's `evidence`, so a plan explains itself:

    hardware.probe -> dataset.scan -> candidates (+ analytic prune) -> trial children
    -> search.choose (memory line + objective) -> memory_model.verify (one more child)
    -> trainer.plan.Plan
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.search import candidates as cand
from planner.search import presets
from planner.search.choice import CandidateMeasurement, Choice
from planner.search.choose import choose
from planner.search.memory_model import allowed_bytes, verify
from planner.trials.trial import measure_each, measure_one
from trainer.data.pairs import Pair
from trainer.data.splits import split_pairs
from trainer.errors import BudgetError, FitplanError
from trainer.plan import DataSpec, Plan, normalization_for, save_plan
from trainer.units import gib

Log = Callable[[str], None]


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
    effective_batch: int = presets.TARGET_EFFECTIVE_BATCH,
    devices: int | None = 1,
    workers: int = 1,
    headroom: float = presets.HEADROOM,
    weights: str = "none",
    out: str | Path | None = None,
    count_planning_time: bool = False,
    log: Log | None = None,
    trial_timeout_s: float = presets.TRIAL_TIMEOUT_S,
) -> PlanResult:
    """Measure this machine on this dataset and return (and optionally write) a plan.

    Args:
        data: dataset root with the image and mask folders.
        images, masks: folder names under `data`.
        val: a separate validation root, or `None`: the trainer splits `val_fraction` off.
        budget_memory: bytes the run may use; `None` (default): the probe's budget.
        budget_time_s: wall time for training; `None` (default): no limit.
        backbones, sizes, precisions: restrict the candidates; `None`: the presets.
        effective_batch: micro-batch x replicas x accumulation to reach. Defaults to `16`.
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
    """
    from planner import hardware
    from planner.scan import dataset

    t0 = time.monotonic()
    say = log or (lambda _msg: None)
    hw = hardware.probe(out_dir=Path(out).parent if out else Path("."), with_tensorflow=False)
    budget = dict(hw["budget"])
    if devices != 1 or workers != 1:  # data parallel: the smallest device's budget decides
        from planner.hardware.replicas import replica_budget

        budget = replica_budget(hw, devices, workers)
    device = budget["device"]
    if budget_memory is not None:
        if budget_memory > budget["bytes"]:
            say(
                f"warning: --budget-memory {gib(budget_memory)} is more than this machine's "
                f"budget {gib(budget['bytes'])} ({budget['derivation']})"
            )
        budget.update(bytes=int(budget_memory), source="user", derivation="--budget-memory")
    say(f"budget: {gib(budget['bytes'])} on {device} ({budget['derivation']})")

    fp = dataset.scan(Path(data), images=images, masks=masks)
    dataset.require_trainable(fp)
    native_hw = tuple(fp["image_size"]["median"])
    num_classes = int(fp["classes"])
    n_train = _train_count(fp, val)
    say(
        f"dataset: {fp['pairs']} pairs ({n_train} for training), {native_hw[0]}x{native_hw[1]}, {fp['task']}"
    )

    bf16 = bool(hw.get("cpu", {}).get("bfloat16_fast")) if device == "cpu" else _gpu_bf16(hw)
    cands = cand.default_candidates(
        native_hw, device=device, bf16=bf16, backbones=backbones, sides=sizes, precisions=precisions
    )
    kept, pruned = cand.prune(
        cands,
        budget_bytes=budget["bytes"],
        headroom=headroom,
        num_classes=num_classes,
        device=device,
    )
    measurements = [
        CandidateMeasurement(p.candidate, pruned_reason=p.reason, estimate_bytes=p.estimate_bytes)
        for p in pruned
    ]
    for p in pruned:
        say(f"pruned {p.candidate.label}: {p.reason}")
    pids: set[int] = set()
    traces = 0
    limit = budget["bytes"]
    # The trial's train step gets what is left once the headroom and the training
    # overhead (pipeline, validation, callbacks: presets.TRAINING_OVERHEAD_BYTES) are
    # kept free: budget x (1 - headroom) - overhead.
    overhead = presets.TRAINING_OVERHEAD_BYTES.get(device, 0)
    step_headroom = min(0.95, headroom + overhead / budget["bytes"])
    step_allowed = allowed_bytes(budget["bytes"], step_headroom)
    replicas = int(budget.get("replicas", 1))
    max_mb = min(presets.MAX_MICRO_BATCH, math.ceil(effective_batch / replicas))
    for c in kept:
        if (
            budget_time_s is not None
            and time.monotonic() - t0 > presets.PLANNING_SHARE * budget_time_s
        ):
            reason = f"not measured: planning already used {presets.PLANNING_SHARE:.0%} of the time budget"
            measurements.append(CandidateMeasurement(c, pruned_reason=reason))
            say(f"skipped {c.label}: {reason}")
            continue
        norm = cand.trial_normalization(
            c,
            allowed_bytes=step_allowed,
            max_micro_batch=max_mb,
            num_classes=num_classes,
            device=device,
            weights=weights,
        )
        say(
            f"measuring {c.label} at micro-batches {list(presets.TRIAL_MICRO_BATCHES)} "
            f"(one child each, BatchNorm {norm})..."
        )
        spec = cand.trial_spec(c, num_classes=num_classes, device=device, normalization=norm)
        results = measure_each(spec, timeout_s=trial_timeout_s, memory_limit_bytes=limit)
        between = _size_between(results)
        if between is not None:
            say(f"  out of memory at {results[-1].micro_batch}: measuring {between} too")
            mid = measure_one(spec, between, timeout_s=trial_timeout_s, memory_limit_bytes=limit)
            results = sorted([*results, mid], key=lambda r: r.micro_batch)
        pids |= {r.child_pid for r in results if r.child_pid}
        traces += sum(r.traces or 0 for r in results)
        measurements.append(CandidateMeasurement(c, trials=tuple(results), normalization=norm))
        say("  " + "; ".join(_trial_line(r) for r in results))

    def time_left() -> float | None:
        if budget_time_s is None:
            return None
        return budget_time_s - (time.monotonic() - t0 if count_planning_time else 0.0)

    choice, verify_steps = _choose_and_verify(
        measurements,
        budget["bytes"],
        step_headroom,
        time_left,
        n_train,
        native_hw,
        effective_batch,
        num_classes,
        device,
        limit,
        trial_timeout_s,
        pids,
        say,
        count_planning_time,
        replicas=replicas,
        weights=weights,
    )
    traces += sum(1 for _ in verify_steps)  # each verification child traces once
    planning_time = time.monotonic() - t0
    plan = _build_plan(
        choice,
        verify_steps,
        fp,
        hw,
        budget,
        data,
        images,
        masks,
        val,
        weights,
        budget_time_s,
        count_planning_time,
        planning_time,
        len(pids),
        traces,
        target=effective_batch,
        measurements=measurements,
    )
    if out is not None:
        save_plan(plan, out)
    return PlanResult(plan, choice, planning_time, len(pids), traces, fp, hw)


def _size_between(results: Sequence) -> int | None:
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


def _choose_and_verify(
    measurements,
    budget,
    headroom,
    time_left,
    n_train,
    native_hw,
    target,
    num_classes,
    device,
    limit,
    timeout_s,
    pids,
    say,
    count_planning_time=False,
    replicas=1,
    weights="none",
):
    """Choose; verify the choice with one measured run; if it fails, drop it and choose again."""
    measurements = list(measurements)
    for _ in range(3):
        choice = _choose_within_time(
            measurements,
            budget_bytes=budget,
            headroom=headroom,
            time_left=time_left,
            count_planning_time=count_planning_time,
            n_train_samples=n_train,
            native_hw=native_hw,
            target_effective_batch=target,
            replicas=replicas,
            weights=weights,
            say=say,
        )
        c, mb = choice.candidate, choice.micro_batch
        m = next(x for x in measurements if x.candidate == c)
        measured = {r.micro_batch: r for r in m.trials if r.ok}
        # A size the trial measured in the plan's own BatchNorm mode needs no second child.
        same_mode = m.normalization in (None, choice.normalization)
        if (mb in measured and same_mode) or choice.line is None:
            say(f"chose {c.label} micro-batch {mb}: measured directly, no verification needed")
            return choice, []
        say(
            f"chose {c.label} micro-batch {mb} (predicted {gib(choice.predicted_peak_bytes)}); verifying..."
        )

        def measure(size: int, c=c):
            # Each size in the plan's own BatchNorm mode at that size (it can change
            # when verification steps down across SMALL_MICRO_BATCH).
            spec = cand.trial_spec(
                c,
                num_classes=num_classes,
                device=device,
                normalization=normalization_for(size, weights),
            )
            r = measure_one(spec, size, timeout_s=timeout_s, memory_limit_bytes=limit)
            if r.child_pid:
                pids.add(r.child_pid)
            return r

        got, line, steps = verify(choice.line, mb, measure, budget, headroom)
        for s in steps:
            say(f"  verify micro-batch {s.micro_batch}: {s.action} ({s.reason})")
        if got >= 1:
            peak = next(s.peak_bytes for s in steps if s.action == "accepted")
            accum = max(1, math.ceil(target / (got * replicas)))
            choice = dataclasses.replace(
                choice,
                micro_batch=got,
                accumulation_steps=accum,
                effective_batch=got * replicas * accum,
                normalization=normalization_for(got, weights),
                predicted_peak_bytes=int(peak),
                line=line,
            )
            return choice, steps
        say(f"  {c.label} failed verification; choosing again without it")
        measurements = [
            x
            if x.candidate != c
            else dataclasses.replace(
                x, trials=(), pruned_reason="failed verification: " + steps[-1].reason
            )
            for x in measurements
        ]
    raise BudgetError("no candidate passed verification within three tries")


def _choose_within_time(measurements, *, time_left, count_planning_time, say, **kw) -> Choice:
    """`search.choose`; under `train --auto`, a time budget too short for one epoch still trains.

    `fitplan plan` fails fast when no candidate trains one epoch in the time budget. Under
    `--auto` planning has already spent part of that budget when this is known, so
    failing would waste it: train the candidate with the shortest epoch instead, for one
    (partial) epoch that the trainer's time limit cuts short and validates. A memory
    budget that nothing fits still fails.
    """
    try:
        return choose(measurements, time_budget_s=time_left(), **kw)
    except BudgetError as exc:
        left = time_left()
        if not count_planning_time or left is None or "time budget" not in str(exc):
            raise
    # Without a time budget every candidate that fits in memory is feasible: take the fastest.
    untimed = choose(measurements, time_budget_s=None, **kw)
    fits = [e for e in untimed.evaluations if e.verdict in ("chosen", "feasible")]
    fastest = min(fits, key=lambda e: e.epoch_time_s).candidate
    only = [m for m in measurements if m.candidate == fastest]
    choice = choose(only, time_budget_s=None, **kw)
    note = (
        f"no candidate trains one epoch in the {max(left, 0):.0f} s left after planning; "
        f"training the fastest, {fastest.label} ({choice.epoch_time_s:.0f} s per epoch), "
        "until the time limit"
    )
    say("warning: " + note)
    evals = []
    for e in untimed.evaluations:
        if e.candidate == fastest:
            e = dataclasses.replace(e, verdict="chosen", reason="the shortest epoch: " + note)
        elif e.verdict in ("chosen", "feasible"):
            why = f"too slow: {e.epoch_time_s:.0f} s per epoch, {max(left, 0):.0f} s left"
            e = dataclasses.replace(e, verdict="rejected", reason=why)
        evals.append(e)
    return dataclasses.replace(
        choice, epochs=1, evaluations=tuple(evals), warnings=(note, *choice.warnings)
    )


def _build_plan(
    choice,
    verify_steps,
    fp,
    hw,
    budget,
    data,
    images,
    masks,
    val,
    weights,
    budget_time_s,
    count_planning_time,
    planning_time,
    children,
    traces,
    target=presets.TARGET_EFFECTIVE_BATCH,
    measurements=(),
) -> Plan:
    c = choice.candidate
    cache, cache_bytes = _cache_decision(fp, choice, budget["bytes"])
    overhead = presets.TRAINING_OVERHEAD_BYTES.get(budget["device"], 0)
    time_limit = None
    if budget_time_s is not None:
        time_limit = float(budget_time_s)  # counted from the start of planning under --auto
    prediction = {
        "peak_bytes": int(choice.predicted_peak_bytes + overhead + cache_bytes),
        "train_step_peak_bytes": int(choice.predicted_peak_bytes),
        "training_overhead_bytes": int(overhead),
        "cache_bytes": int(cache_bytes),
        "step_time_s": round(choice.step_time_s, 4),
        "epoch_time_s": round(choice.epoch_time_s, 2),
        "epochs": int(choice.epochs),
        "micro_batches_per_epoch": int(choice.micro_batches_per_epoch),
        "headroom_bytes": int(choice.headroom_bytes - overhead),
        "budget_bytes": int(budget["bytes"]),
        "verified": bool(verify_steps) or "measured directly",
    }
    evidence = {
        "planning_time_s": round(planning_time, 2),
        "children": children,
        "traces": traces,
        "budget": budget,
        "choice": choice.to_dict(),
        "verification": [s.to_dict() for s in verify_steps],
        # Every trial child's raw results, with the BatchNorm mode it measured in.
        "trials": [
            {
                **m.candidate.to_dict(),
                "normalization": m.normalization,
                "results": [r.to_dict() for r in m.trials],
            }
            for m in measurements
            if m.trials
        ],
        "dataset": {
            k: fp.get(k)
            for k in (
                "pairs",
                "image_size",
                "task",
                "classes",
                "mask_values",
                "decoded_bytes",
                "total_bytes",
                "digest",
            )
        },
        "hardware": {
            "cpu": hw.get("cpu", {}).get("model"),
            "gpus": [g.get("name") for g in hw.get("gpus", [])],
        },
    }
    raw = {
        "version": 1,
        "backbone": c.backbone,
        "input_size": list(c.input_size),
        "micro_batch": choice.micro_batch,
        "accumulation_steps": choice.accumulation_steps,
        "precision": c.precision,
        "weights": weights,
        "normalization": choice.normalization,
        "epochs": int(choice.epochs),
        "time_limit_s": time_limit,
        "data": {
            "path": str(data),
            "images": images,
            "masks": masks,
            "val": str(val) if val is not None else None,
            "cache": cache,
            "mask_values": list(fp["mask_values"]),
            "fingerprint": fp["digest"],
        },
        "target": {
            "device": budget["device"],
            "device_name": budget.get("device_name"),
            "budget_bytes": int(budget["bytes"]),
            "budget_source": budget["source"],
        },
        "prediction": prediction,
        "evidence": evidence,
    }
    if choice.replicas > 1:  # docs/distributed.md: the micro-batch is per replica
        raw["strategy"] = budget["strategy"]
        raw["replicas"] = int(choice.replicas)
        # The learning rate is for the target effective batch, which replicas can pass;
        # Adam (the plan's default) follows the square-root rule.
        raw["optimizer"] = {"lr_scaling": "sqrt", "reference_batch": int(target)}
    try:
        return Plan.from_dict(raw)
    except FitplanError as exc:  # a planner bug, not a user mistake: keep the details
        raise FitplanError(f"the planner produced an invalid plan: {exc}") from exc


def _cache_decision(fp: dict[str, Any], choice: Choice, budget: int) -> tuple[str, int]:
    """Keep decoded pairs in RAM only when they fit in a small share of the headroom."""
    # The scan counts 8-bit channels; the trainer caches float32 images.
    decoded = int(fp.get("decoded_bytes") or 0) * presets.CACHE_BYTES_PER_DECODED_BYTE
    spare = choice.allowed_bytes - choice.predicted_peak_bytes
    if decoded and decoded <= presets.CACHE_SHARE_OF_SPARE * spare:
        return "memory", decoded
    return "stream", 0


def _train_count(fp: dict[str, Any], val) -> int:
    if val is not None:
        return int(fp["pairs"])
    # The trainer's own split rule, on the scan's good pairs: the same count it will train on.
    pairs = [Pair(k, Path(k), Path(k)) for k in fp["pair_keys"]]
    train, _ = split_pairs(pairs, DataSpec(path=".").val_fraction)
    return len(train)


def _gpu_bf16(hw: dict[str, Any]) -> bool:
    return "bfloat16" in str(hw.get("precision_advice", {}).get("policy", ""))


def _trial_line(r) -> str:
    if r.ok:
        return f"mb {r.micro_batch}: {gib(r.peak_bytes)}, {r.step_time_s:.2f} s/step"
    return f"mb {r.micro_batch}: {r.status} ({r.reason})"


