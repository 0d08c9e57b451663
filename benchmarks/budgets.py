"""Plan, then train, at several memory budgets: the prediction against the run's epoch peaks.

For each dataset and budget: `fitplan plan DATA --budget-memory B --out PLAN` (timed, as a
user runs it), then `fitplan train --plan PLAN --max-epochs E --out-dir RUN` (validation
included). The run's epoch peaks come from its `history.csv` (`peak_memory_bytes`: the
process's peak RSS on CPU, the allocator's peak on GPU, per epoch). Prints and writes a
table per dataset: the plan (backbone, input, micro-batch x accumulation), planning wall
time and children, `prediction.peak_bytes` (the planned run's length), the prediction for the
run trained (`metrics.json` `predicted_peak_bytes`: the same curve at E epochs,
`trainer.peak`), the highest epoch peak, the error |pred - meas| / meas against the latter
and the measured peak's share of the budget (the aims of issue 13:
error <= 5%, share 85-100% where a candidate can use that much; otherwise the plan's
`unused_budget_reason`).

    python benchmarks/budgets.py --data ../shared/datasets/epfl-em/train --masks mitochondria \
        --budgets 3GiB,4GiB,6GiB --out benchmarks/out/budgets/epfl-em

Every figure is one run on this machine (a noisy, shared one): the header records the CPU
model and flags, the load average before and after, and the date.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GIB = 2**30


def _cpu() -> str:
    """The CPU model and the flags that change TensorFlow's speed (lscpu)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    model = info.get("Model name", "?").strip()
    flags = [f for f in info.get("Flags", "").split() if f.startswith(("avx", "amx", "fma"))]
    return f"{model}, {os.cpu_count()} CPUs, flags {' '.join(sorted(flags))}"


def _fitplan(*args: str, log: Path) -> tuple[int, float]:
    """Run the fitplan CLI as a user would; its output goes to `log`. Returns (rc, seconds)."""
    t0 = time.monotonic()
    with open(log, "w") as f:
        rc = subprocess.call(
            [sys.executable, "-m", "planner", *args], stdout=f, stderr=subprocess.STDOUT, cwd=ROOT
        )
    return rc, time.monotonic() - t0


def _epoch_peaks(run: Path) -> list[int]:
    from trainer.train.run_dir import read_history

    rows = read_history(run / "history.csv") if (run / "history.csv").exists() else []
    return [int(r["peak_memory_bytes"]) for r in rows if r.get("peak_memory_bytes")]


def measure(data: str, masks: str | None, budget: str, out: Path, epochs: int, extra) -> dict:
    """One budget: plan, train, compare. Returns the row (JSON-ready)."""
    from planner.app.units import parse_bytes

    out.mkdir(parents=True, exist_ok=True)
    plan_path, run = out / "plan.json", out / "run"
    mask_args = ["--masks", masks] if masks else []
    rc, plan_s = _fitplan(
        "plan",
        data,
        *mask_args,
        "--budget-memory",
        budget,
        "--out",
        str(plan_path),
        *extra,
        log=out / "plan.log",
    )
    row: dict[str, Any] = {"budget": budget, "budget_bytes": parse_bytes(budget)}
    if rc != 0:
        return {**row, "error": f"fitplan plan exited {rc} (see {out / 'plan.log'})"}
    plan = json.loads(plan_path.read_text())
    pred, ev = plan["prediction"], plan["evidence"]
    row.update(
        plan=f"{plan['backbone']} {plan['input_size'][0]}x{plan['input_size'][1]} "
        f"{plan['micro_batch']} x {plan['accumulation_steps']} {plan['precision']} "
        f"{plan['data'].get('cache', '?')}",
        planning_wall_s=round(plan_s, 1),
        planning_time_s=ev.get("planning_time_s"),
        children=ev.get("children"),
        predicted_bytes=int(pred["peak_bytes"]),
        unused_budget_reason=pred.get("unused_budget_reason"),
        verification=[
            (s["micro_batch"], s["action"], s.get("peak_bytes")) for s in ev.get("verification", [])
        ],
    )
    if run.exists():
        import shutil

        shutil.rmtree(run)
    rc, train_s = _fitplan(
        "train",
        "--plan",
        str(plan_path),
        "--max-epochs",
        str(epochs),
        "--out-dir",
        str(run),
        log=out / "train.log",
    )
    peaks = _epoch_peaks(run)
    row.update(train_rc=rc, train_wall_s=round(train_s, 1), epoch_peaks=peaks)
    # The prediction for the run trained (`trainer.peak`: its length, here E epochs),
    # which `fitplan train` logs at its start and writes to metrics.json; the plan's own
    # figure is for the planned run's length.
    metrics = run / "metrics.json"
    run_pred = (
        json.loads(metrics.read_text()).get("predicted_peak_bytes") if metrics.exists() else None
    )
    row.update(run_predicted_bytes=int(run_pred) if run_pred else row["predicted_bytes"])
    if peaks:
        meas = max(peaks)
        pred = row["run_predicted_bytes"]
        row.update(
            measured_bytes=meas,
            error=round(abs(pred - meas) / meas, 4),
            signed_error=round((pred - meas) / meas, 4),
            plan_signed_error=round((row["predicted_bytes"] - meas) / meas, 4),
            budget_share=round(meas / row["budget_bytes"], 3),
        )
    return row


def table(name: str, rows: list[dict]) -> str:
    lines = [
        f"#### {name}",
        "",
        "| budget | plan | planning (s, children) | predicted, planned run | predicted, this run "
        "| highest epoch peak | error (this run) | share of budget |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r and isinstance(r["error"], str):
            lines.append(f"| {r['budget']} | {r['error']} | | | | | | |")
            continue
        meas = r.get("measured_bytes")
        m = f"{meas / GIB:.2f} GiB" if meas else f"no epoch (train rc {r.get('train_rc')})"
        err = f"{r['signed_error']:+.1%}" if meas else ""
        share = f"{r['budget_share']:.0%}" if meas else ""
        if meas and r["budget_share"] < 0.85 and r.get("unused_budget_reason"):
            share += f" ({r['unused_budget_reason']})"
        lines.append(
            f"| {r['budget']} | {r['plan']} | {r['planning_wall_s']:.0f} ({r['children']}) "
            f"| {r['predicted_bytes'] / GIB:.2f} GiB "
            f"| {r.get('run_predicted_bytes', r['predicted_bytes']) / GIB:.2f} GiB "
            f"| {m} | {err} | {share} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--masks", default=None)
    p.add_argument("--name", default=None, help="Dataset name in the table (default: --data).")
    p.add_argument("--budgets", default="3GiB,4GiB,6GiB")
    p.add_argument("--max-epochs", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("plan_args", nargs="*", help="Passed to fitplan plan (after --).")
    args = p.parse_args(argv)
    header = (
        f"{time.strftime('%Y-%m-%d %H:%M')} UTC, {_cpu()}, load {os.getloadavg()[0]:.1f} at start"
    )
    print(header, flush=True)
    rows = []
    for b in args.budgets.split(","):
        row = measure(args.data, args.masks, b, args.out / b, args.max_epochs, args.plan_args)
        print(json.dumps(row), flush=True)
        rows.append(row)
    header += f", load {os.getloadavg()[0]:.1f} at end"
    result = {"header": header, "data": args.data, "masks": args.masks, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "budgets.json").write_text(json.dumps(result, indent=1))
    md = header + "\n\n" + table(args.name or args.data, rows) + "\n"
    (args.out / "budgets.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
