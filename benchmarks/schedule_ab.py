"""Schedule A/B: the same plan with ReduceLROnPlateau and with the deadline schedule.

    python benchmarks/schedule_ab.py --out DIR [--minutes 10] [--seeds 0,1,2] [--plan P]
    python benchmarks/schedule_ab.py --out DIR --quick      # a minute or two: it works

Each arm is the same plan (`--plan P`, e.g. written by `fitplan plan`; default
mobilenet_v3_small 256x256, micro-batch 8 x 2) with `time_limit_s = minutes x 60` and
`lr_schedule.kind` set to `"plateau"` (ReduceLROnPlateau and early stopping, what runs
without a time budget) or `"deadline"` (warm-up, linear decay to zero at the deadline,
early stopping only observing). Every seed trains both arms, one after the other; each
is scored on the test split (`--test`, never seen in training). `--arms plateau` (or
`deadline`) runs one arm only: two such processes started together run the arms side by
side, sharing the CPU equally (a fair A/B on a machine with nothing else to do; each
then writes `DIR/schedule_ab-<arm>.json`). Writes
`DIR/schedule_ab.json`: per arm and seed the test Dice, epochs, why it stopped, the
epoch plateau early stopping stopped (or, under the deadline schedule, would have
stopped) and the learning rate per epoch; and per arm the mean and spread.
"""

from __future__ import annotations

import argparse
import dataclasses
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

ARMS = ("plateau", "deadline")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_args(parser)
    parser.add_argument("--plan", type=Path, help="plan to run (default: see the docstring)")
    parser.add_argument("--arms", default=",".join(ARMS), help="plateau,deadline (default both)")
    args = parser.parse_args(argv)
    arms = [a for a in ARMS if a in args.arms.split(",")]
    from trainer.atomic import write_json
    from trainer.plan import load_plan

    args.out.mkdir(parents=True, exist_ok=True)
    masks = args.masks.split(",")[0]
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    seconds = 20.0 if args.quick else args.minutes * 60
    test = args.test
    if args.quick:
        test = quick_subset(args.test, args.images, [masks], 2, args.out / "test-subset")
    rows = []
    t0 = time.monotonic()
    for seed in seeds:
        for arm in arms:
            if args.plan is not None:
                base = load_plan(args.plan)
                base = base.replace(seed=seed, time_limit_s=seconds, epochs=max(base.epochs, 500))
            elif args.quick:
                base = plan_for(
                    args.data, masks, backbone="unet_small", side=128, micro_batch=4,
                    accumulation=1, seed=seed, seconds=seconds, images=args.images,
                    steps_per_epoch=4,
                )  # fmt: skip
            else:
                base = plan_for(
                    args.data, masks, backbone="mobilenet_v3_small", side=256, micro_batch=8,
                    accumulation=2, seed=seed, seconds=seconds, images=args.images,
                )  # fmt: skip
            plan = base.replace(lr_schedule=dataclasses.replace(base.lr_schedule, kind=arm))
            print(f"seed {seed}, {arm}: {seconds:.0f} s ...", flush=True)
            row = train_and_score(plan, args.out / f"{arm}-s{seed}", test, args.images, masks)
            rows.append({"arm": arm, "seed": seed, **row})
            print(
                f"  test Dice {row['test_dice']:.4f}, {row['epochs']} epochs, "
                f"stopped by {row['stopped_by']}",
                flush=True,
            )
    doc = {
        "what": "same plan, ReduceLROnPlateau vs deadline schedule, equal wall time",
        "command": " ".join(["python", "benchmarks/schedule_ab.py", *(argv or sys.argv[1:])]),
        "seconds_per_arm": seconds,
        "seeds": seeds,
        "masks": masks,
        "quick": args.quick,
        "machine": machine(),
        "wall_s": round(time.monotonic() - t0, 1),
        "test_dice": {
            arm: summary([r["test_dice"] for r in rows if r["arm"] == arm]) for arm in arms
        },
        "runs": rows,
    }
    name = "schedule_ab.json" if len(arms) == len(ARMS) else f"schedule_ab-{'-'.join(arms)}.json"
    write_json(args.out / name, doc)
    for arm in arms:
        s = doc["test_dice"][arm]
        print(f"{arm:9s} test Dice {s['mean']:.4f} (std {s['std']}, n {s['n']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
