"""The peers benchmark's training runs (`benchmarks/peers.py`): one real run per training plan.

`training_plan` turns fitplan's plan for a candidate into the plan a peer's micro-batch
trains with; `TrainingMemo` runs `python -m planner train --max-epochs 1` (or, with
`minutes`, a run of that many minutes: the plan's epochs, early stopping and schedule, as a
user trains) once per distinct plan in a child process, watching its RSS; `judge` holds a
run's highest epoch peak against a budget.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from trainer.plan import Plan, accumulation_for, save_plan

ROOT = Path(__file__).resolve().parents[1]
EFFECTIVE_BATCH = 16


def training_plan(base: Plan, micro_batch: int, effective_batch: int = EFFECTIVE_BATCH) -> Plan:
    """`base` (fitplan's plan for the candidate) at `micro_batch`, accumulating to `effective_batch`.

    The prediction and evidence belong to fitplan's choice and go; the budget goes so that
    the trainer's memory guard does not step down and the run's true peak is measured.
    """
    return base.replace(
        micro_batch=micro_batch,
        accumulation_steps=accumulation_for(micro_batch, effective_batch, base.replicas),
        prediction=None,
        evidence=None,
        target=dataclasses.replace(base.target, budget_bytes=None),
    )


class TrainingMemo:
    """One `fitplan train` per distinct training plan, with a memory watchdog.

    Args:
        minutes: None trains one epoch (`--max-epochs 1`); a number trains that long
            (`--set time_limit_s=...`): a plan is judged over the whole run, and a peak
            that fits for one epoch can pass the budget by epoch 5 (docs/runs.md).
    """

    def __init__(
        self,
        out: Path,
        *,
        max_steps: int | None,
        cap_bytes: int,
        timeout_s: float,
        minutes: float | None = None,
        log=print,
    ):
        self.out, self.max_steps, self.cap, self.timeout_s, self.log = (
            out,
            max_steps,
            cap_bytes,
            timeout_s,
            log,
        )
        self.minutes = minutes
        self._memo: dict[str, dict[str, Any]] = {}
        self.runs = 0
        self.reused = 0

    def run(self, plan: Plan) -> dict[str, Any]:
        key = json.dumps(plan.to_dict(), sort_keys=True)
        if key in self._memo:
            self.reused += 1
            return self._memo[key]
        self.runs += 1
        name = f"train-{plan.backbone}-{plan.input_size[0]}-mb{plan.micro_batch}x{plan.accumulation_steps}-{self.runs}"
        result = self._train(plan, self.out / name)
        self._memo[key] = result
        return result

    def _train(self, plan: Plan, run: Path) -> dict[str, Any]:
        import psutil

        from trainer.train.run_dir import read_history

        shutil.rmtree(run, ignore_errors=True)
        plan_path = run.with_suffix(".plan.json")
        save_plan(plan, plan_path)
        cmd = [
            sys.executable,
            "-m",
            "planner",
            "train",
            "--plan",
            str(plan_path),
            "--out-dir",
            str(run),
        ]
        cmd += train_length_args(self.minutes) + (
            ["--max-steps", str(self.max_steps)] if self.max_steps else []
        )
        self.log(f"  train {run.name}: {' '.join(cmd[2:])}")
        t0, highest, killed = time.monotonic(), 0, None
        with open(run.with_suffix(".log"), "w") as log_file:
            proc = subprocess.Popen(
                cmd, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
            )
            ps = psutil.Process(proc.pid)
            while proc.poll() is None:
                try:
                    rss = sum(p.memory_info().rss for p in [ps, *ps.children(recursive=True)])
                except psutil.Error:
                    rss = 0
                highest = max(highest, rss)
                if rss > self.cap or time.monotonic() - t0 > self.timeout_s:
                    killed = (
                        f"RSS {rss / 2**30:.2f} GiB over the watchdog's {self.cap / 2**30:.2f} GiB"
                        if rss > self.cap
                        else f"over {self.timeout_s:.0f} s"
                    )
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    break
                time.sleep(0.25)
        history = read_history(run / "history.csv")
        metrics_path = run / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
        epoch_peaks = [int(r["peak_memory_bytes"]) for r in history if "peak_memory_bytes" in r]
        return {
            "run": str(run),
            "micro_batch": plan.micro_batch,
            "accumulation_steps": plan.accumulation_steps,
            "returncode": proc.returncode,
            "killed": killed,
            "wall_s": round(time.monotonic() - t0, 1),
            "epoch_peaks_bytes": epoch_peaks,
            "peak_bytes": max(epoch_peaks) if epoch_peaks else None,
            "epochs": len(epoch_peaks),
            "metrics_peak_bytes": metrics.get("peak_memory_bytes"),
            "watchdog_max_rss_bytes": highest,
            "steps_per_epoch": metrics.get("steps_per_epoch"),
            "adjustments": metrics.get("adjustments"),
        }


def train_length_args(minutes: float | None) -> list[str]:
    """`fitplan train`'s options for one epoch (None) or a run of `minutes`."""
    if minutes is None:
        return ["--max-epochs", "1"]
    return ["--set", f"time_limit_s={round(minutes * 60)}"]


def judge(training: dict[str, Any], budget: int) -> dict[str, Any]:
    """The training run against one budget: share used and whether it went over."""
    peak = training.get("peak_bytes")
    if training.get("killed") and "RSS" in training["killed"]:
        return {"peak_bytes": None, "share": None, "over": True, "why": training["killed"]}
    if peak is None:
        return {
            "peak_bytes": None,
            "share": None,
            "over": None,
            "why": "the run failed (see its log)",
        }
    return {
        "peak_bytes": peak,
        "share": round(peak / budget, 4),
        "over": peak > budget,
        "why": "",
        "epochs": training.get("epochs"),
    }
