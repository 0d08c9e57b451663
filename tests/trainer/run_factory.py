"""Write a run folder by hand, as `fitplan train` leaves it, without training.

The model is built with the trainer's own builder and its (untrained) weights saved
as best.weights.h5, so loading, tiling, evaluation, export and the report can be
tested in seconds. Tests that need a model that learned something train one instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainer.atomic import write_json, write_text
from trainer.plan import Plan, save_plan

HISTORY = """epoch,dice,iou,learning_rate,loss,peak_memory_bytes,val_dice,val_iou,val_loss
1,0.21,0.12,0.001,1.40,1500000000,0.25,0.14,1.30
2,0.35,0.21,0.001,1.10,1520000000,0.38,0.23,1.05
3,0.52,0.35,0.0005,0.90,1530000000,0.49,0.32,0.95
"""


def make_plan(data_dir: Path, num_classes: int = 2, **over: Any) -> Plan:
    mask_values = [0, 255] if num_classes == 2 else list(range(num_classes))
    raw: dict[str, Any] = {
        "version": 1,
        "backbone": "unet_small",
        "input_size": [32, 32],
        "micro_batch": 2,
        "epochs": 3,
        "data": {"path": str(data_dir), "val_fraction": 0.25, "mask_values": mask_values},
        "target": {"device": "cpu", "budget_bytes": 4 * 2**30, "budget_source": "user"},
        "prediction": {"peak_bytes": 1_600_000_000, "step_time_s": 0.05},
    }
    raw.update(over)
    return Plan.from_dict(raw)


def make_run(run_dir: Path, plan: Plan, num_classes: int = 2, *, metrics: bool = True) -> Path:
    """Write plan.json, best.weights.h5, history.csv and (by default) metrics.json."""
    from trainer.setup import build_model_for_plan

    run_dir.mkdir(parents=True, exist_ok=True)
    save_plan(plan, run_dir / "plan.json")
    model = build_model_for_plan(plan, num_classes, compile=False)
    model.save_weights(str(run_dir / "best.weights.h5"))
    write_text(run_dir / "history.csv", HISTORY)
    if metrics:
        write_json(
            run_dir / "metrics.json",
            {
                "best_val_dice": 0.49,
                "best_epoch": 3,
                "epochs": 3,
                "stopped_by": "epochs",
                "peak_memory_bytes": 1_530_000_000,
                "predicted_peak_bytes": 1_600_000_000,
                "num_classes": num_classes,
                "mask_values": list(plan.data.mask_values or []),
                "backbone": plan.backbone,
            },
        )
    return run_dir
