"""Peak memory per configuration, the planner's prediction for it, and the prediction error.

Measuring reuses the planner's trial child unchanged (default target
`planner.trials.child:measure`), the way the planner uses it: per (backbone, input size,
precision) the fit sizes 1 and 4 each run in a fresh child (`measure_each`, the
planner's trial), and each larger size runs in a fresh child (`measure_one`, the
planner's verification).

What "predicted" means here: exactly what the planner does with a trial. A line
`peak = a + b * micro_batch` is fitted (`planner.search.memory_model.fit_line`) through the
measured peaks of the two *smallest* sizes (1 and 4, as
`planner.search.presets.TRIAL_MICRO_BATCHES`, measured in one child), and predicts every
*larger* size, which is measured in its own fresh child. The two
fitted sizes get no prediction (`predicted_peak_bytes` is `None`): a line through a
point "predicts" it trivially. Each record also carries the analytic estimate the
planner prunes with (`planner.search.candidates.analytic_estimate`), for information only.

BatchNorm mode, as the planner: the fit children measure 1 and 4 in the mode of the sizes
their line predicts (`fit_normalization`), and each check child in the plan's own mode
for its size (`"auto"`).
"""

from __future__ import annotations

import dataclasses
import statistics
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.suites import MemoryMatrix
from planner.search.candidates import analytic_estimate
from planner.search.memory_model import fit_line
from planner.trials.trial import TrialResult, TrialSpec, measure_each, measure_one, run_trial
from trainer.plan import normalization_for

Log = Callable[[str], None]
FIT_POINTS = 2  # the smallest two sizes, as the planner's trial (1 and 4)


def config_key(config: dict[str, Any]) -> str:
    """A stable name for a configuration, e.g. `unet_small 128x128 mb8 float32`."""
    h, w = config["input_size"]
    return f"{config['backbone']} {h}x{w} mb{config['micro_batch']} {config['precision']}"


def measure_baseline_rss(device: str = "cpu", timeout_s: float = 300.0) -> dict[str, Any]:
    """RSS of a child after importing TF, Keras and the trainer and running one op."""
    spec = TrialSpec(
        "unet_small", (32, 32), (1,), device=device, target="benchmarks.targets:baseline_rss"
    )
    r = run_trial(spec, timeout_s=timeout_s)[-1]
    if not r.ok:
        return {"status": r.status, "reason": r.reason, "bytes": None}
    d = r.details
    return {
        "status": "ok",
        "bytes": r.peak_bytes,
        "python_rss_bytes": d.get("python_rss_bytes"),
        "import_rss_bytes": d.get("import_rss_bytes"),
        "import_time_s": d.get("import_time_s"),
        "how": "RSS (/proc/self/statm) of a fresh trial child after `import tensorflow, keras, "
        "trainer.train.setup` and one small op (which starts TF's thread pools); python_rss_bytes "
        "is the same child before importing TensorFlow",
    }


def record(config: dict[str, Any], r: TrialResult, baseline_bytes: int | None) -> dict[str, Any]:
    """One results.json record from a trial result (prediction filled in later)."""
    peak = r.peak_bytes if r.ok else None
    d = r.details or {}
    return {
        "key": config_key(config),
        "config": config,
        "status": r.status,
        "reason": r.reason,
        "peak_bytes": peak,
        "above_baseline_bytes": peak - baseline_bytes if peak and baseline_bytes else None,
        "predicted_peak_bytes": None,
        "prediction": None,
        "relative_error": None,
        "analytic_estimate_bytes": analytic_estimate(
            config["backbone"],
            tuple(config["input_size"]),
            config["micro_batch"],
            config["precision"],
        ),
        "step_time_s": r.step_time_s,
        "trace_time_s": r.trace_time_s,
        "peak_source": d.get("peak_source"),
        "child_pid": r.child_pid,
    }


def add_predictions(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fill `predicted_peak_bytes` and `relative_error` per child group (see module doc).

    Records are grouped by (backbone, input size, precision); within a group the ok
    records of the two smallest micro-batches fit the line, larger ones are predicted.
    A group with fewer than two ok sizes gets no predictions. Returns new dicts.
    """
    out = [{**r, "predicted_peak_bytes": None, "relative_error": None} for r in records]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in out:
        c = r["config"]
        groups.setdefault((c["backbone"], tuple(c["input_size"]), c["precision"]), []).append(r)
    for members in groups.values():
        ok = sorted(
            (r for r in members if r["status"] == "ok" and r["peak_bytes"]),
            key=lambda r: r["config"]["micro_batch"],
        )
        if len(ok) < FIT_POINTS:
            continue
        fit = ok[:FIT_POINTS]
        pts = [(r["config"]["micro_batch"], r["peak_bytes"]) for r in fit]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the line's own warnings are recorded below
            line = fit_line(pts)
        sizes = [m for m, _ in pts]
        for r in fit:
            r["prediction"] = {"source": "fit point", "fit_micro_batches": sizes}
        for r in ok[FIT_POINTS:]:
            mb = r["config"]["micro_batch"]
            pred = int(round(line.predict(mb)))
            r["predicted_peak_bytes"] = pred
            r["relative_error"] = round((pred - r["peak_bytes"]) / r["peak_bytes"], 5)
            r["prediction"] = {
                "source": f"line through micro-batches {sizes[0]} and {sizes[1]}",
                "fit_micro_batches": sizes,
                "a_bytes": int(line.a),
                "b_bytes_per_sample": int(line.b),
                "warnings": list(line.warnings),
            }
    return out


def prediction_error(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Median and max of |predicted - measured| / measured over predicted records."""
    errs = [
        (abs(r["relative_error"]), r["key"]) for r in records if r.get("relative_error") is not None
    ]
    if not errs:
        return {"n": 0, "median": None, "max": None, "worst": None}
    worst = max(errs)
    return {
        "n": len(errs),
        "median": round(statistics.median(e for e, _ in errs), 5),
        "max": round(worst[0], 5),
        "worst": worst[1],
        "definition": "|predicted - measured| / measured, for each micro-batch larger than the "
        "two the line was fitted to (each measured in its own fresh child, as the planner's trial); the larger size "
        "measured in a fresh child",
    }


def fit_normalization(matrix: MemoryMatrix) -> str:
    """The fit children's BatchNorm mode: the plan's mode at the smallest size the line
    predicts (`trainer.plan.normalization_for`, from scratch as every trial: "train")."""
    checks = matrix.check_micro_batches or matrix.fit_micro_batches
    return normalization_for(min(checks), "none")


def run_matrix(
    matrix: MemoryMatrix,
    baseline_bytes: int | None,
    *,
    device: str = "cpu",
    log: Log = print,
) -> list[dict[str, Any]]:
    """Measure every configuration of `matrix`: per (backbone, size, precision), one child
    for the fit sizes (the planner's trial) and one fresh child per check size (its
    verification)."""
    records: list[dict[str, Any]] = []
    for backbone in matrix.backbones:
        for side in matrix.sides:
            for precision in matrix.precisions:
                spec = TrialSpec(
                    backbone,
                    (side, side),
                    matrix.fit_micro_batches,
                    precision=precision,
                    normalization=fit_normalization(matrix),
                    warmup_steps=matrix.warmup_steps,
                    measured_steps=matrix.measured_steps,
                    device=device,
                )
                log(f"measuring {backbone} {side}x{side} {precision} at {list(spec.micro_batches)}")
                fits = {r.micro_batch: r for r in measure_each(spec, timeout_s=matrix.timeout_s)}
                measured = [
                    (mb, fits.get(mb), spec, "trial child (fresh)") for mb in spec.micro_batches
                ]
                for mb in matrix.check_micro_batches:
                    log(f"measuring {backbone} {side}x{side} {precision} at {mb} (fresh child)")
                    # The plan's own mode at this size, as the planner's verification child.
                    one = dataclasses.replace(spec, micro_batches=(mb,), normalization="auto")
                    r = measure_one(one, mb, timeout_s=matrix.timeout_s)
                    measured.append((mb, r, one, "fresh child"))
                for mb, r, child_spec, where in measured:
                    config = {
                        "backbone": backbone,
                        "input_size": [side, side],
                        "micro_batch": mb,
                        "precision": precision,
                    }
                    r = r or TrialResult(
                        "error", mb, reason="not tried: a smaller size failed in this child"
                    )
                    records.append(
                        {
                            **record(config, r, baseline_bytes),
                            "measured_in": where,
                            # As in the planner: "auto" resolves against the child's smallest size.
                            "normalization": child_spec.to_plan().resolved_normalization,
                        }
                    )
                    log("  " + _line(records[-1]))
    return add_predictions(records)


def _line(r: dict[str, Any]) -> str:
    if r["status"] != "ok":
        return f"{r['key']}: {r['status']} ({r['reason']})"
    return f"{r['key']}: peak {r['peak_bytes'] / 2**20:.0f} MiB, {r['step_time_s']:.3f} s/step"
