"""Fit `presets.GROWTH_PER_E_FOLD`: how a run's peak rises with its train steps.

`trainer/peak.py` predicts a CPU run of N train steps to peak at

    base + T x c x ln(min(N, max_steps) / n)

with `base` the verification run's peak plus the in-RAM cache, `T` its highest tensor peak
per step, `n` its train steps (all in the plan's `prediction.growth`) and `c` the constant
fitted here. For each finished run folder given (its `plan.json`, `history.csv` and
`metrics.json`, as `fitplan train` writes them) this reads the figures, the steps the run
trained (epochs x micro-batches per epoch) and its highest epoch peak, and prints per run
the rise measured, the constant that run alone implies, and the prediction's error at the
constant chosen. The constant chosen minimises the largest |error| over all runs (a grid of
0.001 steps); `--per-e-fold` scores a given constant instead.

Runs whose plans predate `prediction.growth` can be given by hand:
`--point NAME:BASE_MIB:T_MIB:N_VERIFIED:STEPS:MEASURED_MIB`.

    python benchmarks/growth_fit.py RUN [RUN ...] [--point ...] [--per-e-fold 0.025]

Under `train --auto` the trainer adds what the planning process held at the start
(`metrics.json` `planning_process_bytes`); it is added here too.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MIB = 2**20


@dataclass(frozen=True)
class Point:
    """One run: what the curve starts from and what the run measured (bytes, steps)."""

    name: str
    base: int
    tensor: int
    verified_steps: int
    steps: int
    measured: int
    extra: int = 0  # what the planning process held (train --auto)
    max_steps: int = 1000

    @property
    def log_steps(self) -> float:
        """The curve's e-folds for this run (`trainer.peak.e_folds`)."""
        from trainer.peak import e_folds

        return e_folds(self.verified_steps, self.max_steps, self.steps)

    def predicted(self, c: float) -> int:
        return self.base + self.extra + int(self.tensor * c * self.log_steps)

    def implied(self) -> float | None:
        """The constant this run alone gives (None when it ran no more than verified)."""
        rise = self.measured - self.base - self.extra
        return rise / (self.tensor * self.log_steps) if self.log_steps > 0 else None


def from_run(run: Path) -> Point:
    """A finished run folder's point; `ValueError` naming what is missing."""
    from trainer.train.run_dir import read_history

    plan = json.loads((run / "plan.json").read_text())
    growth = (plan.get("prediction") or {}).get("growth")
    if not growth:
        raise ValueError(f"{run / 'plan.json'}: no prediction.growth (a plan from before stop 31)")
    metrics = json.loads((run / "metrics.json").read_text())
    rows = read_history(run / "history.csv")
    peaks = [int(float(r["peak_memory_bytes"])) for r in rows if r.get("peak_memory_bytes")]
    if not peaks:
        raise ValueError(f"{run / 'history.csv'}: no epoch peaks")
    return Point(
        name=str(run),
        base=int(growth["base_bytes"]),
        tensor=int(growth["tensor_bytes"]),
        verified_steps=int(growth["verified_steps"]),
        steps=int(metrics["epochs"]) * int(metrics["steps_per_epoch"]),
        measured=max(peaks),
        extra=int(metrics.get("planning_process_bytes") or 0),
        max_steps=int(growth.get("max_steps", 1000)),
    )


def parse_point(text: str) -> Point:
    name, base, tensor, n, steps, measured = text.rsplit(":", 5)
    return Point(
        name,
        int(float(base) * MIB),
        int(float(tensor) * MIB),
        int(n),
        int(steps),
        int(float(measured) * MIB),
    )


def errors(points: list[Point], c: float) -> list[float]:
    """(predicted - measured) / measured per point."""
    return [(p.predicted(c) - p.measured) / p.measured for p in points]


def fit(points: list[Point], grid: float = 0.001, top: float = 0.1) -> float:
    """The constant that minimises the largest |error| (ties: the smaller constant)."""
    best, best_err = 0.0, math.inf
    for i in range(int(round(top / grid)) + 1):
        c = round(i * grid, 6)
        worst = max(abs(e) for e in errors(points, c))
        if worst < best_err - 1e-12:
            best, best_err = c, worst
    return best


def table(points: list[Point], c: float) -> str:
    lines = [
        f"constant {c:.3f}",
        "",
        "| run | steps (verified) | base MiB | T MiB | measured MiB | rise | implied constant "
        "| predicted MiB | error |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p, e in zip(points, errors(points, c), strict=True):
        implied = p.implied()
        lines.append(
            f"| {p.name} | {p.steps} ({p.verified_steps}) | {p.base / MIB:.0f}"
            f"{f' + {p.extra / MIB:.0f}' if p.extra else ''} | {p.tensor / MIB:.0f} "
            f"| {p.measured / MIB:.0f} | {(p.measured - p.base - p.extra) / MIB:+.0f} "
            f"| {'' if implied is None else f'{implied:.3f}'} | {p.predicted(c) / MIB:.0f} "
            f"| {e:+.1%} |"
        )
    worst = max(abs(e) for e in errors(points, c))
    lines += ["", f"largest |error| {worst:.1%} over {len(points)} runs"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="*", type=Path, help="finished run folders")
    p.add_argument("--point", action="append", default=[], help="NAME:BASE:T:N:STEPS:MEASURED")
    p.add_argument("--per-e-fold", type=float, default=None, help="score this constant")
    args = p.parse_args(argv)
    points: list[Point] = []
    for run in args.runs:
        try:
            points.append(from_run(run))
        except (OSError, ValueError, KeyError) as exc:
            print(f"skipped {run}: {exc}", file=sys.stderr)
    points += [parse_point(t) for t in args.point]
    if not points:
        print("no runs to fit", file=sys.stderr)
        return 2
    c = args.per_e_fold if args.per_e_fold is not None else fit(points)
    print(table(points, c))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
