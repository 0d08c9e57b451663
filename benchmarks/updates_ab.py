"""Updates A/B: the same plan at effective batch 16, 8 and 4 for the same wall time.

    python benchmarks/updates_ab.py --out DIR --minutes 5 [--seeds 0,1,2] [--plan P]
    python benchmarks/updates_ab.py --out DIR --minutes 10 [--seeds 0,1,2]
    python benchmarks/updates_ab.py --out DIR --quick      # a minute or two: it works

Issue 15, item 5: under a short time budget the planner lowers the effective batch below
16 to buy more optimizer updates, and scales the learning rate by sqrt(B / 16)
(`planner.search.updates`). This measures the trade. Each arm is the same plan (`--plan
P`, e.g. written by `fitplan plan`; default mobilenet_v3_small 256x256 on epfl-em
mitochondria) at effective batch B (`--batches`, default 16,8,4): micro-batch min(B,
`--micro-batch`) with accumulation to B, `optimizer.lr_scaling` "sqrt" with reference 16
(the planner's rule; at 16 the rate is as written), `time_limit_s` = minutes x 60 and the
plan's schedule (`lr_schedule.kind` "auto": ReduceLROnPlateau since stop 21, as under
`train --auto`; the deadline schedule with `--plan` naming it). Every seed trains every arm,
one after the other, each scored on the test split (`--test`, never seen in training).

Which arm the planner takes: after the runs, the planner's choice
(`planner.verified_choice.choose_within_time`, as under `train --auto`, so a budget
shorter than one epoch still trains) is given the step times the arms measured (as trial
points) and the whole time budget (no planning time subtracted); its effective batch and
reason are in the output (`planner_pick`). Writes `DIR/updates_ab.json`
(per arm and seed: test Dice, optimizer updates, epochs, images/s) and `DIR/updates_ab.md`
(the table).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from equal_time import (  # noqa: E402
    common_args,
    machine,
    plan_for,
    quick_subset,
    summary,
    train_and_score,
)

REFERENCE_BATCH = 16  # presets.TARGET_EFFECTIVE_BATCH: the rate is written for it


def arm_plan(base, batch: int, max_micro_batch: int):
    """`base` at effective batch `batch`, its rate scaled by sqrt(batch / 16) in the trainer."""
    import dataclasses

    from trainer.plan import accumulation_for

    mb = min(batch, max_micro_batch)
    return base.replace(
        micro_batch=mb,
        accumulation_steps=accumulation_for(mb, batch, base.replicas),
        optimizer=dataclasses.replace(
            base.optimizer, lr_scaling="sqrt", reference_batch=REFERENCE_BATCH
        ),
    )


def base_plan(args: argparse.Namespace, masks: str, seed: int, seconds: float):
    """The plan every arm starts from: `--plan`, or the default (quick: a tiny one)."""
    from trainer.plan import load_plan

    if args.plan is not None:
        base = load_plan(args.plan)
        return base.replace(seed=seed, time_limit_s=seconds, epochs=max(base.epochs, 500))
    kw = dict(seed=seed, seconds=seconds, images=args.images, accumulation=1)
    if args.quick:
        return plan_for(
            args.data, masks, backbone="unet_small", side=128, micro_batch=4,
            steps_per_epoch=4, **kw,
        )  # fmt: skip
    return plan_for(args.data, masks, backbone="mobilenet_v3_small", side=256, micro_batch=16, **kw)


def planner_pick(
    plan, rows: list[dict[str, Any]], seconds: float, data: Path, images: str, masks: str
) -> dict[str, Any]:
    """The effective batch `choose` takes at the step times the arms measured."""
    from planner.make_plan import _train_count
    from planner.scan import dataset
    from planner.search.candidates import Candidate
    from planner.search.choice import CandidateMeasurement
    from planner.trials.spec import TrialResult
    from planner.verified_choice import choose_within_time

    gib = 2**30
    rates: dict[int, list[float]] = {}
    for r in rows:
        if r.get("images_per_s"):
            rates.setdefault(r["micro_batch"], []).append(r["images_per_s"])
    trials = tuple(
        # memory is not what this measures: a line far under the budget below
        TrialResult("ok", mb, gib + mb * gib // 100, mb * plan.replicas / (sum(v) / len(v)))
        for mb, v in sorted(rates.items())
    )
    fp = dataset.scan(data, images=images, masks=masks)
    candidate = Candidate(plan.backbone, tuple(plan.input_size), plan.precision)
    choice = choose_within_time(  # as `train --auto`: shorter than one epoch still trains
        [CandidateMeasurement(candidate, trials)],
        time_left=lambda: seconds,
        count_planning_time=True,
        say=lambda _line: None,
        budget_bytes=2**40,
        n_train_samples=_train_count(fp, None),
        native_hw=tuple(fp["image_size"]["median"]),
        max_micro_batch=max(rates),
    )
    return {
        "effective_batch": choice.target_batch,
        "micro_batch": choice.micro_batch,
        "accumulation_steps": choice.accumulation_steps,
        "updates_predicted": choice.updates,
        "reason": choice.effective_batch_reason,
    }


def table(doc: dict[str, Any]) -> str:
    """The markdown table: one row per arm, test Dice mean (std) over seeds."""
    lines = [
        f"Updates A/B, {_duration(doc['seconds_per_arm'])} per arm, masks {doc['masks']}, "
        f"seeds {doc['seeds']}{' (quick: figures mean nothing)' if doc['quick'] else ''}",
        "",
        "| effective batch | micro-batch x accumulation | learning rate | updates | epochs "
        "| images/s | test Dice mean (std) | per seed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm in doc["arms"]:
        runs = [r for r in doc["runs"] if r["effective_batch"] == arm["effective_batch"]]
        s = arm["test_dice"]
        std = f"{s['std']:.3f}" if s["std"] is not None else "-"
        upd = [r["optimizer_updates"] for r in runs if r.get("optimizer_updates") is not None]
        ips = [r["images_per_s"] for r in runs if r.get("images_per_s")]
        per_seed = ", ".join(format(r["test_dice"], ".3f") for r in runs)
        lines.append(
            f"| {arm['effective_batch']} | {arm['micro_batch']} x {arm['accumulation_steps']} "
            f"| {arm['learning_rate']:.2e} | {_mean(upd, '.0f')} "
            f"| {_mean([r['epochs'] for r in runs], '.1f')} | {_mean(ips, '.1f')} "
            f"| {s['mean']:.3f} ({std}) | {per_seed} |"
        )
    pick = doc.get("planner_pick") or {}
    if pick:
        lines += [
            "",
            f"The planner takes effective batch {pick['effective_batch']}: {pick['reason']}.",
        ]
    lines += ["", f"Command: `{doc['command']}`; wall {doc['wall_s']:.0f} s."]
    return "\n".join(lines) + "\n"


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:.0f} s"


def _mean(values: list[float], fmt: str) -> str:
    return format(sum(values) / len(values), fmt) if values else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_args(parser)
    parser.add_argument("--plan", type=Path, help="plan to run (default: see the docstring)")
    parser.add_argument("--batches", default="16,8,4", help="effective batches, comma-separated")
    parser.add_argument("--micro-batch", type=int, default=16, help="largest micro-batch")
    args = parser.parse_args(argv)
    from trainer.atomic import write_json, write_text
    from trainer.train.distribute import learning_rate_for

    args.out.mkdir(parents=True, exist_ok=True)
    masks = args.masks.split(",")[0]
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    seconds = 20.0 if args.quick else args.minutes * 60
    batches = sorted({int(b) for b in args.batches.split(",")}, reverse=True)
    max_mb = 4 if args.quick else args.micro_batch
    test = args.test
    if args.quick:
        test = quick_subset(args.test, args.images, [masks], 2, args.out / "test-subset")
    rows, arms = [], {}
    t0 = time.monotonic()
    for seed in seeds:
        for batch in batches:
            plan = arm_plan(base_plan(args, masks, seed, seconds), batch, max_mb)
            arms[batch] = {
                "effective_batch": plan.effective_batch,
                "micro_batch": plan.micro_batch,
                "accumulation_steps": plan.accumulation_steps,
                "learning_rate": learning_rate_for(plan),
            }
            print(f"seed {seed}, effective batch {batch}: {seconds:.0f} s ...", flush=True)
            run_dir = args.out / f"b{batch}-s{seed}"
            row = train_and_score(plan, run_dir, test, args.images, masks)
            metrics = json.loads((run_dir / "metrics.json").read_text())
            row["images_per_s"] = metrics.get("images_per_s")
            rows.append({"effective_batch": batch, "seed": seed, **arms[batch], **row})
            print(
                f"  test Dice {row['test_dice']:.4f}, {row['optimizer_updates']} updates, "
                f"{row['epochs']} epochs",
                flush=True,
            )
    for batch, arm in arms.items():
        arm["test_dice"] = summary([r["test_dice"] for r in rows if r["effective_batch"] == batch])
    last = base_plan(args, masks, seeds[-1], seconds)
    doc = {
        "what": "same plan at several effective batches (rate x sqrt(B/16)), equal wall time",
        "command": " ".join(["python", "benchmarks/updates_ab.py", *(argv or sys.argv[1:])]),
        "seconds_per_arm": seconds,
        "seeds": seeds,
        "masks": masks,
        "quick": args.quick,
        "machine": machine(),
        "wall_s": round(time.monotonic() - t0, 1),
        "arms": [arms[b] for b in batches],
        "planner_pick": planner_pick(last, rows, seconds, args.data, args.images, masks),
        "runs": rows,
    }
    write_json(args.out / "updates_ab.json", doc)
    text = table(doc)
    write_text(args.out / "updates_ab.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
