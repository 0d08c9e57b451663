"""Measured priors: each default candidate (backbone x input side) for the same wall time.

    python benchmarks/backbones.py --out DIR [--minutes 10] [--seeds 0] \\
        [--masks mitochondria,membranes] [--data ROOT --test ROOT]
    python benchmarks/backbones.py --out DIR --quick        # a minute or two: it works

For every mask set, seed and candidate of the planner's default search space
(`planner.search.presets.DEFAULT_BACKBONES` x `DEFAULT_SIDES`, or `--backbones`,
`--sides`), one plan is trained for `--minutes` (deadline schedule, micro-batch
`--micro-batch` x accumulation to an effective batch of 16) and scored on the test split.
Writes `DIR/backbones.json`: per mask set each candidate's test Dice and its Dice
relative to the best candidate of that set (mean over seeds), the numbers the
objective's `backbone_prior` / `size_prior` are meant to come from
(docs/planning.md); on a user's own data (`--data`, `--test`) it measures their priors.
"""

from __future__ import annotations

import argparse
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

EFFECTIVE_BATCH = 16


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_args(parser)
    parser.set_defaults(seeds="0")
    parser.add_argument("--backbones", help="comma-separated (default: the planner's)")
    parser.add_argument("--sides", help="comma-separated square sides (default: the planner's)")
    parser.add_argument("--micro-batch", type=int, default=4, help="images per step")
    args = parser.parse_args(argv)
    from trainer.atomic import write_json

    args.out.mkdir(parents=True, exist_ok=True)
    mask_sets = args.masks.split(",")
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    seconds = 25.0 if args.quick else args.minutes * 60
    test = args.test
    if args.quick:
        mask_sets = mask_sets[:1]
        test = quick_subset(args.test, args.images, mask_sets, 1, args.out / "test-subset")
    accumulation = max(1, EFFECTIVE_BATCH // args.micro_batch)
    rows = []
    t0 = time.monotonic()
    for masks in mask_sets:
        for seed in seeds:
            for backbone, side in candidates(args):
                name = f"{backbone}@{side}"
                plan = plan_for(
                    args.data, masks, backbone=backbone, side=side,
                    micro_batch=args.micro_batch, accumulation=accumulation, seed=seed,
                    seconds=seconds, images=args.images,
                    steps_per_epoch=4 if args.quick else None,
                )  # fmt: skip
                print(f"{masks}, seed {seed}, {name}: {seconds:.0f} s ...", flush=True)
                run_dir = args.out / f"{masks}-{backbone}-{side}-s{seed}"
                row = train_and_score(plan, run_dir, test, args.images, masks)
                rows.append({"masks": masks, "seed": seed, "candidate": name, **row})
                print(f"  test Dice {row['test_dice']:.4f}", flush=True)
    table = {m: relative([r for r in rows if r["masks"] == m]) for m in mask_sets}
    doc = {
        "what": "each candidate trained for the same wall time; test Dice relative to the best",
        "command": " ".join(["python", "benchmarks/backbones.py", *(argv or sys.argv[1:])]),
        "seconds_per_candidate": seconds,
        "seeds": seeds,
        "micro_batch": args.micro_batch,
        "accumulation_steps": accumulation,
        "quick": args.quick,
        "machine": machine(),
        "wall_s": round(time.monotonic() - t0, 1),
        "relative_test_dice": table,
        "runs": rows,
    }
    write_json(args.out / "backbones.json", doc)
    for masks, per in table.items():
        for name, s in per.items():
            print(f"{masks:14s} {name:24s} test Dice {s['mean']:.4f}  relative {s['relative']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
