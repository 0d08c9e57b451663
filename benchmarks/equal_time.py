"""Shared by the equal-wall-time benchmarks (`schedule_ab.py`, `backbones.py`).

One arm = one plan trained for a fixed wall time into its own run folder, then scored on
a test set the run never saw with `trainer.use.evaluate.evaluate` (tiled prediction at
native resolution, Dice over all test pixels). Arms run one after another in this
process (each `train` starts from `keras.backend.clear_session()`), so they never share
the CPU with each other.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `planner`, `trainer` importable
    sys.path.insert(0, str(ROOT))

EPFL = ROOT.parent / "shared" / "datasets" / "epfl-em"


def common_args(parser: argparse.ArgumentParser) -> None:
    """`--out`, `--data`, `--test`, `--masks`, `--minutes`, `--seeds`, `--quick`."""
    parser.add_argument("--out", type=Path, required=True, help="folder for runs and the table")
    parser.add_argument("--data", type=Path, default=EPFL / "train", help="training root")
    parser.add_argument("--test", type=Path, default=EPFL / "test", help="held-out test root")
    parser.add_argument("--images", default="images", help="image folder under the roots")
    parser.add_argument("--masks", default="mitochondria", help="mask folder(s), comma-separated")
    parser.add_argument("--minutes", type=float, default=10.0, help="wall time per arm")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated plan seeds")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="prove it works: tiny plans, a few seconds per arm, 1 seed, 2 test images",
    )


def plan_for(
    data: Path,
    masks: str,
    *,
    backbone: str,
    side: int,
    micro_batch: int,
    accumulation: int,
    seed: int,
    seconds: float,
    images: str = "images",
    steps_per_epoch: int | None = None,
    **fields: Any,
):
    """A plan for one arm: `epochs` high enough that the time limit ends the run."""
    from trainer.plan import Plan

    raw = {
        "version": 1,
        "backbone": backbone,
        "input_size": [side, side],
        "micro_batch": micro_batch,
        "accumulation_steps": accumulation,
        "epochs": 500,
        "time_limit_s": float(seconds),
        "steps_per_epoch": steps_per_epoch,
        "seed": seed,
        "data": {"path": str(data), "images": images, "masks": masks},
        **fields,
    }
    return Plan.from_dict(raw)


def train_and_score(plan, run_dir: Path, test: Path, images: str, masks: str) -> dict[str, Any]:
    """Train `plan` into `run_dir` (replaced if present) and score it on `test`."""
    from trainer.train.fit import train
    from trainer.train.run_dir import read_history
    from trainer.use.evaluate import evaluate

    if run_dir.exists():
        shutil.rmtree(run_dir)
    t0 = time.monotonic()
    result = train(plan, run_dir)
    train_s = time.monotonic() - t0
    scores = evaluate(run_dir, test, images=images, masks=masks)
    m = result.metrics
    history = read_history(run_dir / "history.csv")
    return {
        "test_dice": scores["dice_mean"],
        "test_iou": scores["iou_mean"],
        "best_val_dice": m.get("best_val_dice"),
        "best_epoch": m.get("best_epoch"),
        "epochs": m.get("epochs"),
        "stopped_by": m.get("stopped_by"),
        "lr_schedule": m.get("lr_schedule"),
        "optimizer_updates": m.get("optimizer_updates"),  # recorded by every run
        "early_stopping_would_stop_epoch": m.get("early_stopping_would_stop_epoch"),
        "learning_rate_per_epoch": [r.get("learning_rate") for r in history],
        "val_dice_per_epoch": [r.get("val_dice") for r in history],
        "train_wall_s": round(train_s, 1),
        "test_images": scores["images"],
    }


def quick_subset(root: Path, images: str, masks: list[str], n: int, out: Path) -> Path:
    """A test root with the first `n` pairs of `root` (symlinks), for `--quick`."""
    names = sorted(p.name for p in (root / images).iterdir())[:n]
    for folder in [images, *masks]:
        (out / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            src = next((root / folder).glob(Path(name).stem + ".*"))
            dst = out / folder / src.name
            if not dst.exists():
                os.symlink(src.resolve(), dst)
    return out


def summary(values: list[float]) -> dict[str, float | None]:
    """Mean and sample standard deviation (`None` with one value)."""
    return {
        "mean": round(statistics.fmean(values), 4),
        "std": round(statistics.stdev(values), 4) if len(values) > 1 else None,
        "n": len(values),
    }


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import platform

    return {
        "cores": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "load_average": list(os.getloadavg()),
    }
