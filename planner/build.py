"""The plan document: a verified `Choice` and what planning measured, as a `trainer.plan.Plan`.

Owns the plan's content as the planner writes it: the choice's fields, the data-cache
decision, the `prediction` (the verification run's measured peak plus the cache) and the `evidence` (budget, choice, verification, every trial child's results,
dataset and hardware summaries), so a plan explains itself. `planner.make_plan` calls
`build_plan` once, after verification.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from planner.request import PlanContext, PlanRequest, overhead_estimate
from planner.scan.labels import label_fields
from planner.search import presets
from planner.search.choice import CandidateMeasurement, Choice
from planner.search.finetune import freeze_epochs, plan_weights
from planner.search.memory_model import VerifyStep
from trainer.data.masks import mask_index_dtype
from trainer.errors import FitplanError
from trainer.peak import growth_bytes
from trainer.plan import Plan
from trainer.units import gib

# The scan's summary of the dataset that the evidence keeps.
DATASET_EVIDENCE = (
    "pairs",
    "image_size",
    "task",
    "classes",
    "mask_values",
    "decoded_bytes",
    "mask_decoded_bytes",
    "total_bytes",
    "digest",
)


def build_plan(
    ctx: PlanContext,
    choice: Choice,
    verify_steps: Sequence[VerifyStep],
    measurements: Sequence[CandidateMeasurement],
    *,
    planning_time_s: float,
    children: int,
    traces: int,
) -> Plan:
    """The validated plan for `choice`; a plan that fails validation is a planner bug.

    Args:
        ctx: the request, budget, fingerprint and hardware report.
        choice: the chosen configuration, after verification.
        verify_steps: the verification runs (empty: a provisional plan, not yet verified).
        measurements: every candidate, for the evidence's trial results.
        planning_time_s, children, traces: what planning cost, for the evidence.
    """
    req, budget = ctx.request, ctx.budget
    c = choice.candidate
    cache, cache_bytes = cache_decision(ctx.fingerprint, choice, budget)
    # offline without the ImageNet file: from scratch, with a notice (search/finetune.py)
    weights, normalization, weights_notice = plan_weights(
        c.backbone, req.weights, choice.micro_batch, choice.normalization
    )
    raw = {
        "version": 1,
        "backbone": c.backbone,
        "input_size": list(c.input_size),
        "micro_batch": choice.micro_batch,
        "accumulation_steps": choice.accumulation_steps,
        "precision": c.precision,
        "weights": weights,
        "normalization": normalization,
        "epochs": _epochs(choice, req),
        # pretrained: decoder first on the frozen encoder, then fine-tune (search/finetune.py)
        "freeze_encoder_epochs": freeze_epochs(weights, int(choice.epochs)),
        # counted from the start of planning under --auto
        "time_limit_s": float(req.budget_time_s) if req.budget_time_s is not None else None,
        "data": _data(req, ctx.fingerprint, cache),
        "target": {
            "device": budget["device"],
            "device_name": budget.get("device_name"),
            "budget_bytes": int(budget["bytes"]),
            "budget_source": budget["source"],
            # GPU plans: the devices the runs are pinned to and the host RAM beside them.
            "device_uuids": budget.get("device_uuids"),
            "device_memory_bytes": budget.get("memory_total_bytes"),
            "host_budget_bytes": budget.get("host_bytes") if budget["device"] == "gpu" else None,
        },
        "prediction": _prediction(
            choice, budget, cache_bytes, verify_steps, target_batch=_target(choice, req)
        ),
        "evidence": _evidence(
            ctx, choice, verify_steps, measurements, planning_time_s, children, traces
        ),
    }
    if weights_notice is not None:
        raw["evidence"]["weights_notice"] = weights_notice
    if choice.replicas > 1:  # docs/distributed.md: the micro-batch is per replica
        raw["strategy"] = budget["strategy"]
        raw["replicas"] = int(choice.replicas)
    reference = choice.requested_batch or req.target_batch
    if choice.replicas > 1 or choice.lowered or choice.effective_batch != reference:
        # The learning rate is for the requested effective batch, which replicas can pass,
        # a short time budget can lower (search/updates.py) and a micro-batch that does
        # not divide it rounds up (9 x 2 = 18, 11 x 2 = 22 for 16: the larger micro-batch
        # uses the memory budget); Adam (the plan's default) follows the square-root rule
        # (Malladi et al. 2022, arXiv:2205.10287).
        raw["optimizer"] = {"lr_scaling": "sqrt", "reference_batch": int(reference)}
    try:
        return Plan.from_dict(raw)
    except FitplanError as exc:  # a planner bug, not a user mistake: keep the details
        raise FitplanError(f"the planner produced an invalid plan: {exc}") from exc


def _epochs(choice: Choice, req: PlanRequest) -> int:
    """The plan's `epochs`: the estimate, or under a time budget an upper bound.

    With a time budget the run's learning rate follows the clock (the deadline schedule,
    `trainer.train.schedule`) and decays to zero at the deadline; the epoch estimate
    (`prediction.epochs`) is only an estimate, and a run that finished its estimated
    epochs early would leave the rest of the user's time unused (measured: a 10-minute
    `train --auto` on epfl-em ended 16 s early after its 5 planned epochs). So the clock
    ends the run: `epochs` is `Objective.max_epochs`. A multi-worker plan keeps the
    plateau schedule (docs/distributed.md) and the estimate.
    """
    if req.budget_time_s is None or req.workers > 1:
        return int(choice.epochs)
    return max(int(choice.epochs), presets.DEFAULT_OBJECTIVE.max_epochs)


def _target(choice: Choice, req: PlanRequest) -> int:
    """The effective batch the choice accumulates to (lowered for updates, or the request's)."""
    return choice.target_batch or req.target_batch


def _data(req: PlanRequest, fp: dict[str, Any], cache: str) -> dict[str, Any]:
    """The plan's `data`: the dataset as the user named it, and the scan's mask values."""
    return {
        "path": str(req.data),
        "images": req.images,
        "masks": req.masks,
        "val": str(req.val) if req.val is not None else None,
        "cache": cache,
        "mask_values": list(fp["mask_values"]),
        "fingerprint": fp["digest"],
        **label_fields(fp, req.data_options or {}),
    }


def _prediction(
    choice: Choice,
    budget: dict[str, Any],
    cache_bytes: int,
    verify_steps: Sequence[VerifyStep],
    *,
    target_batch: int,
) -> dict[str, Any]:
    """The planned run's predicted peak: the verification run's measured peak, what a run
    of the planned length is expected to add to it, and the cache; `bound_bytes` adds the
    highest growth measured instead (`presets.RUN_GROWTH_BOUND`), or the expected peak if
    that is higher.

    What a run adds grows with the train steps it makes (`trainer.peak`): on a CPU the
    verification run's highest tensor peak per step (`tensor_step_peak_bytes`) scales
    the curve, `prediction.growth` carries it so the trainer can predict a run of another
    length (`--max-epochs 1`, a resume), and `peak_bytes` is its value at the planned
    steps. Without that record (a GPU, where nothing was measured yet, or a verification
    run cached before it was recorded) the constant `presets.RUN_GROWTH` stands in.

    The verification run (`planner.trials.verify_run`) streams, so an in-RAM cache's
    bytes come on top. Without an accepted verification run (a provisional plan, built
    for that run itself) the train step's peak plus the estimated training overhead
    stands in, and `verified` is false.
    """
    step = int(choice.predicted_peak_bytes)
    run = next((s for s in verify_steps if s.action == "accepted"), None)
    if run is not None and run.peak_bytes is not None:
        run_peak, source = int(run.peak_bytes), "measured by the verification run"
    else:
        run_peak = step + overhead_estimate(
            budget, choice.candidate.backbone, choice.accumulation_steps
        )
        source = "estimated (presets.TRAINING_OVERHEAD_BYTES, ACCUMULATION_PARAM_COPIES)"
    on_gpu = budget["device"] == "gpu"  # the cache is host RAM, not the GPU's
    cache = 0 if on_gpu else int(cache_bytes)
    steps = _planned_steps(choice)
    details = run.details if run is not None else None
    growth = None if on_gpu else growth_curve(details, run_peak + cache, choice.accumulation_steps)
    if growth is not None:
        grown = growth_bytes(growth, steps)
    else:
        grown = int(run_peak * presets.RUN_GROWTH)
    peak = run_peak + grown + cache
    return {
        "peak_bytes": peak,
        "bound_bytes": max(peak, run_peak + int(run_peak * presets.RUN_GROWTH_BOUND) + cache),
        "run_peak_bytes": run_peak,
        "run_growth_bytes": grown,
        "planned_steps": steps,
        "growth": growth,
        "train_step_peak_bytes": step,
        "training_overhead_bytes": run_peak - step,
        "training_overhead_source": source,
        "cache_bytes": int(cache_bytes),
        "step_time_s": round(choice.step_time_s, 4),
        "epoch_time_s": round(choice.epoch_time_s, 2),
        "epochs": int(choice.epochs),
        "micro_batches_per_epoch": int(choice.micro_batches_per_epoch),
        "headroom_bytes": int(budget["bytes"]) - peak,
        "budget_bytes": int(budget["bytes"]),
        "budget_share": round(peak / budget["bytes"], 3),
        "unused_budget_reason": _unused_reason(
            choice, peak, budget, target_batch, run_peak - step, verify_steps
        ),
        "verified": run is not None,
        **(_host_prediction(budget, run, cache_bytes) if on_gpu else {}),
    }


def growth_curve(
    details: dict[str, Any] | None, base: int, accumulation: int
) -> dict[str, Any] | None:
    """`prediction.growth` (`trainer.peak`) from a CPU verification run's details (its
    tensor peaks per step), or `None` where the run did not record them."""
    details = details or {}
    peaks = [int(p) for p in details.get("tensor_step_peak_bytes") or [] if p]
    if not peaks:
        return None
    return {
        "base_bytes": int(base),
        "tensor_bytes": max(peaks),
        "verified_steps": int(
            details.get("micro_batches") or presets.VERIFY_UPDATES * accumulation
        ),
        "per_e_fold": presets.GROWTH_PER_E_FOLD,
        "max_steps": presets.GROWTH_MAX_STEPS,
        # its resident set with the model built, before the first step: `train --auto`
        # compares the planning process with it (trainer.train.fit.run_prediction)
        "start_rss_bytes": details.get("start_rss_bytes"),
    }


def planned_run_peak(
    ctx: PlanContext, choice: Choice, peak_bytes: int, details: dict[str, Any] | None
) -> tuple[int, int] | None:
    """A verification run's measured peak as the planned run's expected peak (`trainer.peak`,
    the cache included) and the planned train steps, or `None` without the curve (a GPU,
    no tensor peaks recorded)."""
    if ctx.budget["device"] == "gpu":
        return None
    _, cache = cache_decision(ctx.fingerprint, choice, ctx.budget)
    curve = growth_curve(details, int(peak_bytes) + cache, choice.accumulation_steps)
    if curve is None:
        return None
    steps = _planned_steps(choice)
    return int(curve["base_bytes"]) + growth_bytes(curve, steps), steps


def _planned_steps(choice: Choice) -> int:
    """The planned run's train steps: its epochs (what the time budget allows) x
    micro-batches per epoch."""
    return int(choice.epochs) * int(choice.micro_batches_per_epoch)


def _host_prediction(budget: dict[str, Any], run: VerifyStep | None, cache: int) -> dict[str, Any]:
    """A GPU plan's host side: the verification run's host peak (or the estimate) + cache."""
    from planner.hardware.budget import GPU_HOST_PROCESS_BYTES

    measured = (run.details or {}).get("host_peak_bytes") if run is not None else None
    host = int(measured) if measured else GPU_HOST_PROCESS_BYTES
    return {"host_peak_bytes": host + int(cache), "host_budget_bytes": budget.get("host_bytes")}


# Below this share of the budget the plan says why it leaves the rest unused (the share
# under which verification also tries one larger micro-batch).
WELL_USED_SHARE = presets.STEP_UP_BELOW


def _unused_reason(
    choice: Choice,
    peak: int,
    budget: dict[str, Any],
    target_batch: int,
    overhead: int,
    verify_steps: Sequence[VerifyStep] = (),
) -> str | None:
    """Why the plan's predicted peak stays under 85% of the budget, or `None` if it does not."""
    if peak >= WELL_USED_SHARE * budget["bytes"]:
        return None
    refused = next((s for s in verify_steps if s.action == "step up refused"), None)
    if refused is not None:
        return f"a larger micro-batch was verified and refused: {refused.reason}"
    if choice.micro_batch * choice.replicas >= target_batch:
        return (
            f"the micro-batch reached the effective batch ({target_batch}) with no accumulation "
            "left to trade: a larger one changes the training, it does not fit more"
        )
    estimate = overhead_estimate(budget, choice.candidate.backbone, choice.accumulation_steps)
    if overhead < estimate:
        return (
            f"the micro-batch was sized with the estimated training overhead "
            f"({gib(estimate)}); the verification run measured {gib(overhead)}"
        )
    return (
        "the objective preferred this candidate to one that fills more of the budget "
        "(see the candidates and their scores)"
    )


def _evidence(
    ctx: PlanContext,
    choice: Choice,
    verify_steps: Sequence[VerifyStep],
    measurements: Sequence[CandidateMeasurement],
    planning_time_s: float,
    children: int,
    traces: int,
) -> dict[str, Any]:
    hw = ctx.hardware
    return {
        "planning_time_s": round(planning_time_s, 2),
        "children": children,
        "traces": traces,
        "budget": ctx.budget,
        "choice": choice.to_dict(),
        # e.g. "the time budget buys 72 updates at effective batch 16; 8 buys 144 (wanted 300)"
        "effective_batch_reason": choice.effective_batch_reason or None,
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
        "dataset": {k: ctx.fingerprint.get(k) for k in DATASET_EVIDENCE},
        "hardware": {
            "cpu": hw.get("cpu", {}).get("model"),
            "gpus": [g.get("name") for g in hw.get("gpus", [])],
        },
    }


def cache_bytes(fp: dict[str, Any]) -> int:
    """What the trainer's in-RAM cache of every pair holds (`trainer.data.pipeline`: the
    decoded images as float32, the masks as class indices, uint8 up to 256 classes).

    The scan's `decoded_bytes` counts one byte per image channel and per mask pixel,
    `mask_decoded_bytes` the masks' part. A fingerprint without the latter (scanned
    before stop 26) is bounded as before: every byte x 4.
    """
    decoded = int(fp.get("decoded_bytes") or 0)
    masks = fp.get("mask_decoded_bytes")
    if masks is None:
        return decoded * presets.CACHE_BYTES_PER_IMAGE_BYTE
    masks = int(masks)
    # The dtype `trainer.data.decode.mask_lut` gives the cached class-index masks.
    dtype = mask_index_dtype(len(fp.get("mask_values") or ()), fp.get("ignore_index"))
    per_mask = np.dtype(dtype).itemsize
    return (decoded - masks) * presets.CACHE_BYTES_PER_IMAGE_BYTE + masks * per_mask


def cache_decision(
    fp: dict[str, Any], choice: Choice, budget: dict[str, Any] | None = None
) -> tuple[str, int]:
    """Keep decoded pairs in RAM only when they fit in a small share of the headroom.

    The cache is host RAM: on a CPU it shares the budget with the run; on a GPU it
    comes out of the host budget beside the GPU (`host_spare_bytes`), never the GPU's.
    """
    decoded = cache_bytes(fp)
    if budget is not None and budget.get("device") == "gpu":
        from planner.hardware.budget import host_spare_bytes

        spare = host_spare_bytes(budget)
    else:
        spare = choice.allowed_bytes - choice.predicted_peak_bytes
    if decoded and decoded <= presets.CACHE_SHARE_OF_SPARE * spare:
        return "memory", decoded
    return "stream", 0
