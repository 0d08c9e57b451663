"""Measured priors: each default candidate (backbone x input side) for the same wall time.

    python benchmarks/backbones.py --out DIR [--minutes 10] [--seeds 0] \\
        [--masks mitochondria,membranes] [--data ROOT --test ROOT]
    python benchmarks/backbones.py --out DIR --quick        # a minute or two: it works

For every mask set, seed and candidate of the planner's default search space
(`planner.search.presets.DEFAULT_BACKBONES` x `DEFAULT_SIDES`, or `--backbones`,
`--sides`), one plan is trained for `--minutes` (the plan's default schedule, micro-batch
`--micro-batch` x accumulation to `--effective-batch`) and scored on the test split.
Writes `DIR/backbones.json`: per mask set each candidate's test Dice and its Dice
relative to the best candidate of that set (mean over seeds), and the priors fitted to
them (`fit_priors`): the objective scores a candidate as backbone_prior x size_prior x
time_factor, so dividing each measured Dice by the time factor of what its run bought
(the objective's own formula, from the run's epochs and optimizer updates) leaves
backbone_prior x (side / 256) ** size_exponent, fitted by least squares in log space.
On a user's own data (`--data`, `--test`) it measures their priors; `--refit FILE`
fits again from a backbones.json without training.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from equal_time import (  # noqa: E402
    common_args,
    machine,
    plan_for,
    quick_subset,
    summary,
    train_and_score,
)
from updates_ab import arm_plan  # noqa: E402

# The effective batch `train --auto` chooses for a 10-minute budget on epfl-em on a
# 2-core CPU (planner.search.updates lowers 16 to 4 there): priors for the regime the
# product trains in. `--effective-batch 16` measures them at the untimed default.
EFFECTIVE_BATCH = 4


def candidates(args: argparse.Namespace) -> list[tuple[str, int]]:
    """(backbone, side) pairs: `--backbones` x `--sides`, else the planner's defaults."""
    from planner.search import presets

    if args.quick:
        return [(b, 128) for b in presets.DEFAULT_BACKBONES]  # fewer test tiles than 64
    backbones = args.backbones.split(",") if args.backbones else presets.DEFAULT_BACKBONES
    sides = [int(s) for s in args.sides.split(",")] if args.sides else presets.DEFAULT_SIDES
    return [(b, s) for b in backbones for s in sides]


def relative(rows: list[dict]) -> dict[str, dict]:
    """Per candidate: mean test Dice over seeds and its share of the best candidate's."""
    keys = sorted({r["candidate"] for r in rows})
    means = {k: summary([r["test_dice"] for r in rows if r["candidate"] == k]) for k in keys}
    best = max(m["mean"] for m in means.values()) or 1.0
    return {k: {**m, "relative": round(m["mean"] / best, 4)} for k, m in means.items()}


def time_factor(epochs: int, updates: int | None, objective=None) -> float:
    """The objective's time factor for what a run bought (planner.search.choose._with_time)."""
    from planner.search import presets
    from planner.search import updates as upd

    obj = objective or presets.DEFAULT_OBJECTIVE
    return upd.epochs_factor(epochs, obj) * upd.updates_factor(updates, obj)


def fit_priors(rows: list[dict], objective=None) -> dict:
    """backbone_prior and size_exponent that make the objective rank `rows` as measured.

    Each row is one run: `candidate` ("backbone@side"), `test_dice`, `epochs`,
    `optimizer_updates`. log(test_dice / time_factor) = log(prior[backbone]) +
    size_exponent x log(side / size_reference) + one constant per mask set and seed
    (absorbed into the priors' scale), solved by least squares. The fitted priors are
    scaled so that the largest equals the largest current prior of the backbones
    measured (the others keep theirs: only ratios matter). With one side measured the
    size exponent is not fitted (the current one is kept).
    """
    import numpy as np

    from planner.search import presets

    obj = objective or presets.DEFAULT_OBJECTIVE
    usable = [r for r in rows if r.get("test_dice") and r.get("epochs")]
    if not usable:
        return {"fitted": False, "why": "no run with a test Dice above 0"}
    parsed = [(r["candidate"].split("@")[0], int(r["candidate"].split("@")[1])) for r in usable]
    backbones = sorted({b for b, _ in parsed})
    sides = sorted({s for _, s in parsed})
    groups = sorted({(r.get("masks"), r.get("seed")) for r in usable}, key=str)
    fit_size = len(sides) > 1
    ncol = len(backbones) + (1 if fit_size else 0) + len(groups) - 1  # first group: reference
    a = np.zeros((len(usable), ncol))
    y = np.zeros(len(usable))
    factors = []
    for i, (r, (b, side)) in enumerate(zip(usable, parsed, strict=True)):
        tf = time_factor(int(r["epochs"]), r.get("optimizer_updates"), obj)
        factors.append(round(tf, 4))
        x = math.log(side / obj.size_reference)
        a[i, backbones.index(b)] = 1.0
        y[i] = math.log(r["test_dice"] / tf)
        if fit_size:
            a[i, len(backbones)] = x
        else:
            y[i] -= obj.size_exponent * x
        g = groups.index((r.get("masks"), r.get("seed")))
        if g:
            a[i, len(backbones) + (1 if fit_size else 0) + g - 1] = 1.0
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    raw = {b: math.exp(coef[i]) for i, b in enumerate(backbones)}
    anchor = max(obj.backbone_prior.get(b, 0.5) for b in backbones)
    top = max(raw.values())
    residual = y - a @ coef
    return {
        "fitted": True,
        "backbone_prior": {b: round(anchor * v / top, 3) for b, v in raw.items()},
        "size_exponent": round(float(coef[len(backbones)]), 3) if fit_size else None,
        "current": {
            "backbone_prior": {b: obj.backbone_prior.get(b) for b in backbones},
            "size_exponent": obj.size_exponent,
        },
        "time_factors": factors,
        "rms_log_residual": round(float(np.sqrt(np.mean(residual**2))), 4),
        "runs": len(usable),
    }


def fits_per_set(rows: list[dict], mask_sets: list[str]) -> dict[str, dict]:
    """`fit_priors` per mask set, and over all of them (`"all"`)."""
    fits = {m: fit_priors([r for r in rows if r["masks"] == m]) for m in mask_sets}
    fits["all"] = fit_priors(rows)
    return fits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_args(parser)
    parser.set_defaults(seeds="0")
    parser.add_argument("--backbones", help="comma-separated (default: the planner's)")
    parser.add_argument("--sides", help="comma-separated square sides (default: the planner's)")
    parser.add_argument("--micro-batch", type=int, default=4, help="images per step")
    parser.add_argument(
        "--effective-batch", type=int, default=EFFECTIVE_BATCH, help="images per optimizer update"
    )
    parser.add_argument("--refit", type=Path, help="fit the priors again from this backbones.json")
    args = parser.parse_args(argv)
    from trainer.atomic import write_json

    if args.refit:
        doc = json.loads(args.refit.read_text())
        print(json.dumps(fits_per_set(doc["runs"], list(doc["relative_test_dice"])), indent=2))
        return 0

    args.out.mkdir(parents=True, exist_ok=True)
    mask_sets = args.masks.split(",")
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    seconds = 25.0 if args.quick else args.minutes * 60
    test = args.test
    if args.quick:
        mask_sets = mask_sets[:1]
        test = quick_subset(args.test, args.images, mask_sets, 1, args.out / "test-subset")
    rows = []
    t0 = time.monotonic()
    for masks in mask_sets:
        for seed in seeds:
            for backbone, side in candidates(args):
                name = f"{backbone}@{side}"
                plan = arm_plan(
                    plan_for(
                        args.data, masks, backbone=backbone, side=side,
                        micro_batch=args.micro_batch, accumulation=1, seed=seed,
                        seconds=seconds, images=args.images,
                        steps_per_epoch=4 if args.quick else None,
                    ),
                    args.effective_batch,
                    max_micro_batch=args.micro_batch,
                )  # fmt: skip
                print(f"{masks}, seed {seed}, {name}: {seconds:.0f} s ...", flush=True)
                run_dir = args.out / f"{masks}-{backbone}-{side}-s{seed}"
                row = train_and_score(plan, run_dir, test, args.images, masks)
                rows.append({"masks": masks, "seed": seed, "candidate": name, **row})
                print(f"  test Dice {row['test_dice']:.4f}", flush=True)
    table = {m: relative([r for r in rows if r["masks"] == m]) for m in mask_sets}
    fits = fits_per_set(rows, mask_sets)
    doc = {
        "what": "each candidate trained for the same wall time; test Dice relative to the best",
        "command": " ".join(["python", "benchmarks/backbones.py", *(argv or sys.argv[1:])]),
        "seconds_per_candidate": seconds,
        "seeds": seeds,
        "micro_batch": min(args.micro_batch, args.effective_batch),
        "effective_batch": args.effective_batch,
        "learning_rate": "1e-3 x sqrt(effective batch / 16), as train --auto scales it",
        "quick": args.quick,
        "machine": machine(),
        "wall_s": round(time.monotonic() - t0, 1),
        "relative_test_dice": table,
        "fitted_priors": fits,
        "runs": rows,
    }
    write_json(args.out / "backbones.json", doc)
    for masks, per in table.items():
        for name, s in per.items():
            print(f"{masks:14s} {name:24s} test Dice {s['mean']:.4f}  relative {s['relative']:.3f}")
    for masks, fit in fits.items():
        print(f"fitted priors ({masks}): {json.dumps(fit)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
