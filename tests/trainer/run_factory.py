"""Write a run folder by hand, as `fitplan train` leaves it, without training.

The model is built with the trainer's own builder and its (untrained) weights saved
as best.weights.h5, so loading, tiling, evaluation, export and the report can be
tested in seconds. Tests that need a model that learned something train one instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from tests.plans import minimal_plan
from trainer.atomic import write_json, write_text
from trainer.plan import Plan, save_plan

HISTORY = """epoch,dice,iou,learning_rate,loss,peak_memory_bytes,val_dice,val_iou,val_loss
1,0.21,0.12,0.001,1.40,1500000000,0.25,0.14,1.30
2,0.35,0.21,0.001,1.10,1520000000,0.38,0.23,1.05
3,0.52,0.35,0.0005,0.90,1530000000,0.49,0.32,0.95
"""


def make_plan(data_dir: Path, num_classes: int = 2, **over: Any) -> Plan:
    mask_values = [0, 255] if num_classes == 2 else list(range(num_classes))
    run: dict[str, Any] = {
        "epochs": 3,
        "target": {"device": "cpu", "budget_bytes": 4 * 2**30, "budget_source": "user"},
        "prediction": {"peak_bytes": 1_600_000_000, "step_time_s": 0.05},
    }
    data = {"val_fraction": 0.25, "mask_values": mask_values}
    return minimal_plan(data_dir, data=data, **{**run, **over})


def _crops(plan: Plan, num_classes: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    from trainer.data.decode import load_image, load_mask
    from trainer.data.pairs import find_pairs

    pairs = find_pairs(plan.data.path, plan.data.images, plan.data.masks).pairs
    values = plan.data.mask_values or tuple(range(num_classes))
    images = [(load_image(p.image), load_mask(p.mask, values)) for p in pairs]
    rng = np.random.default_rng(0)
    th, tw = plan.input_size
    xs, ys = [], []
    for i in range(n):
        image, mask = images[i % len(images)]
        y0 = int(rng.integers(0, image.shape[0] - th + 1))
        x0 = int(rng.integers(0, image.shape[1] - tw + 1))
        xs.append(image[y0 : y0 + th, x0 : x0 + tw])
        ys.append(mask[y0 : y0 + th, x0 : x0 + tw, None].astype(np.float32))
    return np.stack(xs), np.stack(ys)


class FakeRun(NamedTuple):
    """A hand-written run folder and the saved model's output `y` on crops `x` of its data."""

    path: Path
    x: np.ndarray
    y: np.ndarray


def make_run(
    run_dir: Path, plan: Plan, num_classes: int = 2, *, metrics: bool = True, fit_steps: int = 0
) -> FakeRun:
    """Write plan.json, best.weights.h5, history.csv and (by default) metrics.json.

    The weights come from a model built with another seed than the plan's, so a
    loader that forgot to load them would not reproduce `y`. `fit_steps` > 0 fits
    it for that many steps on crops of the plan's data first: an untrained net
    predicts about 0.5 everywhere, which says nothing about how quantization
    changes the masks of a real model.
    """
    from trainer.train.setup import build_model_for_plan, compile_model

    run_dir.mkdir(parents=True, exist_ok=True)
    save_plan(plan, run_dir / "plan.json")
    model = build_model_for_plan(plan.replace(seed=plan.seed + 1), num_classes, compile=False)
    if fit_steps:
        compile_model(model, plan, num_classes)
        x, y = _crops(plan, num_classes, 64)
        model.fit(x, y, batch_size=8, epochs=fit_steps * 8 // len(x), verbose=0)
    model.save_weights(str(run_dir / "best.weights.h5"))
    x = _crops(plan, num_classes, 2)[0]
    y = np.asarray(model.predict_on_batch(x))
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
    return FakeRun(run_dir, x, y)
