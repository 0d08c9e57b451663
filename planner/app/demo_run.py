"""`fitplan demo`: the whole path on a synthetic dataset, in a few minutes on a laptop CPU.

Generates (or reuses) a small deterministic dataset, then runs what a user would:
`train --auto` (probe, scan, plan with dry runs, train under a time budget) and
evaluate on a held-apart synthetic test set. Everything lands in one folder the user can inspect.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from planner.app.demo import make_demo_dataset

# Small on purpose: the demo must finish in minutes on 2 CPU cores.
DEMO_PAIRS, DEMO_TEST_PAIRS, DEMO_SIZE = 48, 8, (128, 128)
DEMO_BACKBONES = ("unet_small", "mobilenet_v3_small")
DEMO_SIDES = (128,)  # one size: each candidate is a child process costing ~30-60 s here


def _dataset(path: Path, n: int, seed: int) -> Path:
    if (path / "README.txt").exists() and (path / "images").is_dir():
        return path  # made by an earlier demo run with the same settings
    return make_demo_dataset(path, n=n, size=DEMO_SIZE, seed=seed)


def run_demo(
    out: str | Path = "fitplan-demo",
    *,
    budget_time_s: float = 300.0,
    backbones: Sequence[str] = DEMO_BACKBONES,
    log: Callable[[str], None] = print,
    callbacks: Sequence[Any] | Callable[[], Sequence[Any]] = (),
) -> dict[str, Any]:
    """Run the demo into `out`; return a summary (plan, training metrics, test scores).

    Running it again reuses the datasets and replaces the previous run folder.
    """
    from planner.app.auto import auto_train

    out = Path(out)
    train_dir = _dataset(out / "data", DEMO_PAIRS, seed=0)
    test_dir = _dataset(out / "test", DEMO_TEST_PAIRS, seed=1)
    run = out / "run"
    if run.exists():
        shutil.rmtree(run)
    plan_result, trained = auto_train(
        train_dir,
        run,
        budget_time_s=budget_time_s,
        backbones=list(backbones),
        sizes=list(DEMO_SIDES),
        log=log,
        callbacks=callbacks,
    )
    from trainer.use.evaluate import evaluate  # after planning: it imports TensorFlow

    scores = evaluate(run, test_dir)
    log(
        f"test set ({scores['images']} held-apart images): Dice {scores['dice_mean']:.3f}, "
        f"IoU {scores['iou_mean']:.3f}"
    )
    return {
        "out": str(out),
        "plan": str(run / "plan.json"),
        "planning_time_s": round(plan_result.planning_time_s, 1),
        "planning_children": plan_result.children,
        "train": trained.metrics,
        "test": {k: scores[k] for k in ("dice_mean", "iou_mean", "images")},
    }
