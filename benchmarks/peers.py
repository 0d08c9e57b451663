"""Peers, side by side on the same work: the batch-size searches users reach for, against fitplan.

    python benchmarks/peers.py [--data DIR --masks NAME] [--candidates mobilenet_v3_small:256,...]
        [--budgets 3GiB,4GiB,6GiB] [--strategies lightning_power,...,fitplan]
        [--out benchmarks/out/peers] [--quick]

For each candidate (backbone at a square input side) and memory budget:

1. fitplan: `planner.make_plan.make_plan` restricted to that backbone, side and float32,
   with an empty measurement cache (cold planning): its micro-batch and accumulation,
   planning wall time, child processes, OOMs among its trials and verification runs.
2. each peer's search (`benchmarks.peers_search`, sources cited there): every trial is
   one fresh fitplan trial child (`planner.trials.trial.measure_one`) running the
   candidate's train step at one micro-batch, under the budget as its memory limit
   (`"oom"`: on a CPU the child's RSS crossed the budget), with the peer's steps per trial.
3. per distinct training plan: one real `fitplan train --max-epochs 1` (validation and
   checkpoint included) of fitplan's own plan for the candidate with the chosen
   micro-batch and the accumulation that keeps the effective batch at 16; its highest
   epoch peak (`history.csv`, `peak_memory_bytes`) against each budget. Over budget = an
   OOM that planning did not catch. The run's memory guard is off (`target.budget_bytes`
   unset) so the true peak is measured; a watchdog here kills a run past 1.5x the
   largest budget.

Trials and training runs are memoized within one invocation (same spec, micro-batch and
limit -> same result; same training plan -> same run); a reused trial still counts its
own measured wall time in the peer's planning time. Writes `OUT/peers.json` and
`OUT/peers.md` and prints the table. See docs/benchmarks.md, "Peers".
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks`, `planner`, `trainer` importable
    sys.path.insert(0, str(ROOT))

from benchmarks.peers_report import lscpu, render_markdown  # noqa: E402
from benchmarks.peers_search import DEFAULT_STRATEGIES, STRATEGIES, Measure, Probe  # noqa: E402
from benchmarks.peers_train import EFFECTIVE_BATCH, TrainingMemo, judge, training_plan  # noqa: E402
from planner.search.candidates import Candidate, trial_spec  # noqa: E402
from trainer.atomic import write_text  # noqa: E402
from trainer.errors import FitplanError  # noqa: E402
from trainer.plan import Plan, accumulation_for  # noqa: E402

EPFL = ROOT.parent / "shared" / "datasets" / "epfl-em" / "train"
DEFAULT_CANDIDATES = "mobilenet_v3_small:256,efficientnet_b0:384"
DEFAULT_BUDGETS = "3GiB,4GiB,6GiB"
TRIAL_TIMEOUT_S = 300.0
WATCHDOG_FACTOR = 1.5
MEMO_NOTE = (
    "trials and training runs are memoized within this invocation: the same trial spec, "
    "micro-batch and memory limit give the same result without a new child (an ok trial "
    "also under a larger limit its peak fits), and the same training plan the same run; "
    "a reused trial still counts its own measured wall time"
)


def parse_candidates(text: str) -> list[Candidate]:
    """`"mobilenet_v3_small:256,efficientnet_b0:384"` -> float32 candidates at side x side."""
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        backbone, _, side = item.partition(":")
        if not side.isdigit():
            raise FitplanError(f"`--candidates` items must be backbone:side. Received: {item!r}")
        out.append(Candidate(backbone, (int(side), int(side))))
    if not out:
        raise FitplanError("`--candidates` is empty")
    return out


def parse_budgets(text: str) -> list[int]:
    from planner.app.units import parse_bytes

    return [parse_bytes(s.strip(), "--budgets") for s in text.split(",") if s.strip()]


def parse_strategies(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [n for n in names if n != "fitplan" and n not in STRATEGIES]
    if bad or not names:
        raise FitplanError(
            f"`--strategies` must name some of {sorted(STRATEGIES) + ['fitplan']}. Received: {text!r}"
        )
    return names


class TrialMemo:
    """Peers' trials: one fresh child per (spec, micro-batch, limit), reused within the run.

    Also reused: an `ok` result under a larger limit when its peak is within the new one
    (the limit only decides when the child is stopped, so the same child would have run
    the same way; the rule fitplan's measurement cache uses). An `oom` or any other
    failure is reused only under the same limit: its wall time depends on the limit.

    Args:
        measure_one: `planner.trials.trial.measure_one` or a fake with its signature.
        timeout_s: each child's time limit.
        log: receives one line per trial.
    """

    def __init__(self, measure_one: Callable[..., Any], timeout_s: float, log=print):
        self._measure_one, self.timeout_s, self.log = measure_one, timeout_s, log
        self._memo: dict[str, list[tuple[int, Probe]]] = {}
        self.children = 0
        self.reused = 0

    def measure(
        self, candidate: Candidate, steps: tuple[int, int], num_classes: int, limit: int
    ) -> Measure:
        """The `measure(micro_batch) -> Probe` a peer's search calls."""

        def one(mb: int) -> Probe:
            spec = trial_spec(
                candidate,
                (mb,),
                num_classes=num_classes,
                device="cpu",
                warmup_steps=steps[0],
                measured_steps=steps[1],
            )
            key = json.dumps(spec.to_dict(), sort_keys=True)
            seen = self._memo.setdefault(key, [])
            for at, p in seen:
                if at == limit or (p.ok and p.peak_bytes is not None and p.peak_bytes <= limit):
                    self.reused += 1
                    return dataclasses.replace(p, reused=True)
            t0 = time.monotonic()
            r = self._measure_one(spec, mb, timeout_s=self.timeout_s, memory_limit_bytes=limit)
            p = Probe(mb, r.status, r.peak_bytes, time.monotonic() - t0)
            seen.append((limit, p))
            self.children += 1
            peak = f"{p.peak_bytes / 2**20:.0f} MiB" if p.peak_bytes else "-"
            self.log(
                f"  trial {candidate.label} mb {mb} {steps}: {p.status} {peak} ({p.wall_s:.0f} s)"
            )
            return p

        return one


def fitplan_ooms(evidence: dict[str, Any] | None) -> int:
    """Out-of-memory results among a plan's trial children and verification runs."""
    ev = evidence or {}
    trials = sum(
        r.get("status") == "oom" for t in ev.get("trials", []) for r in t.get("results", [])
    )
    return trials + sum(v.get("status") == "oom" for v in ev.get("verification", []))


def run_fitplan(candidate: Candidate, budget: int, args, out: Path, log=print) -> dict[str, Any]:
    """fitplan's plan for one candidate and budget, planned cold (an empty measurement cache)."""
    from planner.make_plan import make_plan

    cache = Path(tempfile.mkdtemp(prefix="fitplan-cache-"))
    old = os.environ.get("FITPLAN_CACHE_DIR")
    os.environ["FITPLAN_CACHE_DIR"] = str(cache)
    path = out / f"fitplan-{candidate.backbone}-{candidate.input_size[0]}-{budget}.json"
    try:
        result = make_plan(
            args.data,
            masks=args.masks,
            budget_memory=budget,
            backbones=[candidate.backbone],
            sizes=[candidate.input_size[0]],
            precisions=[candidate.precision],
            effective_batch=EFFECTIVE_BATCH,
            out=path,
            log=lambda line: log(f"  fitplan: {line}"),
        )
    except FitplanError as exc:
        return {
            "micro_batch": None,
            "error": str(exc),
            "trials": None,
            "ooms": None,
            "planning_s": None,
        }
    finally:
        if old is None:
            os.environ.pop("FITPLAN_CACHE_DIR", None)
        else:
            os.environ["FITPLAN_CACHE_DIR"] = old
        shutil.rmtree(cache, ignore_errors=True)
    plan = result.plan
    return {
        "micro_batch": plan.micro_batch,
        "accumulation_steps": plan.accumulation_steps,
        "planning_s": round(result.planning_time_s, 2),
        "trials": result.children,
        "ooms": fitplan_ooms(plan.evidence),
        "predicted_peak_bytes": (plan.prediction or {}).get("peak_bytes"),
        "plan_file": str(path),
        "error": None,
        "_plan": plan,
    }


def run(args, log=print) -> dict[str, Any]:
    """Everything for one invocation; returns the results document."""
    from planner.trials.trial import measure_one

    started = time.monotonic()
    load_start = os.getloadavg()[0]
    cands, budgets = parse_candidates(args.candidates), parse_budgets(args.budgets)
    strategies = parse_strategies(args.strategies)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    trials = TrialMemo(measure_one, TRIAL_TIMEOUT_S, log=log)
    rejudged = rejudge_rows(args.rejudge) if args.rejudge else None
    if rejudged:
        budgets = [r["budget_bytes"] for r in rejudged[0]]
    trainings = TrainingMemo(
        out,
        max_steps=args.max_steps,
        cap_bytes=int(WATCHDOG_FACTOR * max(budgets)),
        timeout_s=args.train_timeout,
        minutes=args.train_minutes,
        log=log,
    )
    if rejudged:
        rows, bases = rejudged
        first = next(iter(bases.values()))
        args.data, args.masks = first.data.path, first.data.masks  # the header says what trained
        judge_rows(rows, bases, trainings)
        return document(args, rows, trials, trainings, started, load_start)
    rows: list[dict[str, Any]] = []
    bases: dict[tuple[str, int], Plan] = {}
    for cand in cands:
        for budget in budgets:
            log(f"{cand.label}, budget {budget / 2**30:.2f} GiB: fitplan")
            fp = run_fitplan(cand, budget, args, out, log=log)
            plan = fp.pop("_plan", None)
            if plan is not None:
                bases[(cand.label, budget)] = plan
            num_classes = (plan.data.num_classes if plan is not None else None) or 2
            if "fitplan" in strategies:
                rows.append(
                    {
                        "strategy": "fitplan",
                        "label": "fitplan plan",
                        "candidate": cand.label,
                        "budget_bytes": budget,
                        **fp,
                    }
                )
            for name in strategies:
                if name == "fitplan":
                    continue
                s = STRATEGIES[name]
                log(f"{cand.label}, budget {budget / 2**30:.2f} GiB: {name}")
                res = s.run(trials.measure(cand, s.steps, num_classes, budget), budget)
                mb = res.micro_batch
                rows.append(
                    {
                        "strategy": name,
                        "label": s.label,
                        "candidate": cand.label,
                        "budget_bytes": budget,
                        "micro_batch": mb,
                        "accumulation_steps": accumulation_for(mb, EFFECTIVE_BATCH) if mb else None,
                        **{k: v for k, v in res.to_dict().items() if k != "micro_batch"},
                    }
                )
    judge_rows(rows, bases, trainings)
    return document(args, rows, trials, trainings, started, load_start)


def judge_rows(
    rows: list[dict[str, Any]], bases: dict[tuple[str, int], Plan], trainings: TrainingMemo
) -> None:
    """One training run per distinct micro-batch (fitplan's plan for the candidate and
    budget, or for another budget of that candidate), each row judged against its budget."""
    for row in rows:
        base = bases.get((row["candidate"], row["budget_bytes"])) or next(
            (p for (label, _), p in bases.items() if label == row["candidate"]), None
        )
        if not row.get("micro_batch") or base is None:
            row["training"] = None
            continue
        t = trainings.run(training_plan(base, row["micro_batch"]))
        row["training"] = {**judge(t, row["budget_bytes"]), "run": t["run"]}


def rejudge_rows(path: Path) -> tuple[list[dict[str, Any]], dict[tuple[str, int], Plan]]:
    """An earlier `peers.json`'s choices without their training runs, and fitplan's plans
    (the `plan_file` of its rows) to train them with: `--rejudge` trains the same choices
    again, e.g. for longer (`--train-minutes`), without planning or searching again."""
    from trainer.plan import load_plan

    try:
        doc = json.loads(Path(path).read_text())
        old_rows = doc["rows"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FitplanError(f"{path}: not a peers.json ({exc})") from None
    rows = [{k: v for k, v in r.items() if k != "training"} for r in old_rows]
    bases = {
        (r["candidate"], r["budget_bytes"]): load_plan(r["plan_file"])
        for r in rows
        if r.get("strategy") == "fitplan" and r.get("plan_file")
    }
    if not bases:
        raise FitplanError(f"{path}: no fitplan row with a plan file to train the choices with")
    return rows, bases


def document(args, rows, trials, trainings, started: float, load_start: float) -> dict[str, Any]:
    """The results document `peers.json` holds."""
    from benchmarks.run import machine

    return {
        "schema": 1,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {**machine(), **lscpu()},
        "load_average_start": load_start,
        "load_average_end": os.getloadavg()[0],
        "data": str(args.data),
        "masks": args.masks,
        "quick": bool(args.quick),
        "train_minutes": args.train_minutes,
        "rejudged": str(args.rejudge) if args.rejudge else None,
        "effective_batch": EFFECTIVE_BATCH,
        "memo": {
            "note": MEMO_NOTE,
            "trial_children": trials.children,
            "trial_reuses": trials.reused,
            "training_runs": trainings.runs,
            "training_reuses": trainings.reused,
        },
        "rows": rows,
        "trainings": list(trainings._memo.values()),
        "wall_s": round(time.monotonic() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, help="dataset root (default: epfl-em train)")
    p.add_argument("--masks", help="mask folder under --data (default: mitochondria)")
    p.add_argument("--candidates", help=f"backbone:side,... (default: {DEFAULT_CANDIDATES})")
    p.add_argument("--budgets", help=f"e.g. {DEFAULT_BUDGETS} (the default)")
    p.add_argument(
        "--strategies",
        default=",".join(DEFAULT_STRATEGIES),
        help=f"of {sorted(STRATEGIES)} and fitplan",
    )
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "peers")
    p.add_argument(
        "--max-steps", type=int, default=None, help="cap optimizer updates per training epoch"
    )
    p.add_argument(
        "--train-timeout", type=float, default=4 * 3600.0, help="seconds per training run"
    )
    p.add_argument(
        "--train-minutes",
        type=float,
        default=None,
        help="train each choice this long (the plan's epochs and early stopping) instead of one epoch",
    )
    p.add_argument(
        "--rejudge",
        type=Path,
        default=None,
        help="an earlier peers.json: train its choices again (e.g. with --train-minutes), no planning",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="defaults become mobilenet_v3_small:128, 3GiB, a 24-pair demo set, 3 updates",
    )
    args = p.parse_args(argv)
    if args.quick:  # options given explicitly still win
        from planner.app.demo import make_demo_dataset

        if args.data is None:
            args.data = make_demo_dataset(args.out / "demo-data", n=24, size=(128, 128))
            args.masks = args.masks or "masks"
        args.candidates = args.candidates or "mobilenet_v3_small:128"
        args.budgets = args.budgets or "3GiB"
        args.max_steps = args.max_steps or 3
    args.data = args.data or EPFL
    args.masks = args.masks or "mitochondria"
    args.candidates = args.candidates or DEFAULT_CANDIDATES
    args.budgets = args.budgets or DEFAULT_BUDGETS
    try:
        doc = run(args, log=lambda s: print(s, flush=True))
    except FitplanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    md = render_markdown(doc)
    write_text(args.out / "peers.json", json.dumps(doc, indent=2, default=str) + "\n")
    write_text(args.out / "peers.md", md)
    print(md)
    print(f"wrote {args.out / 'peers.json'} and peers.md ({doc['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
