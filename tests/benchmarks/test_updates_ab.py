"""benchmarks/updates_ab.py without training: the arms' plans, the planner's pick, the table."""

from __future__ import annotations

import math

import pytest

from benchmarks import updates_ab as ab
from benchmarks.equal_time import plan_for


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from planner.app.demo import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("uab") / "data", n=10, size=(64, 64), seed=1)


def _base(data_dir, **kw):
    kw = {"backbone": "unet_small", "side": 32, "micro_batch": 16, **kw}
    return plan_for(data_dir, "masks", accumulation=1, seed=0, seconds=10.0, **kw)


def test_each_arm_accumulates_to_its_batch_with_the_rate_scaled_to_16(data_dir):
    base = _base(data_dir)
    for batch, mb, accum in [(16, 8, 2), (8, 8, 1), (4, 4, 1)]:
        plan = ab.arm_plan(base, batch, max_micro_batch=8)
        assert (plan.micro_batch, plan.accumulation_steps, plan.effective_batch) == (
            mb,
            accum,
            batch,
        )
        assert (plan.optimizer.lr_scaling, plan.optimizer.reference_batch) == ("sqrt", 16)
    # The trainer's rate: 1e-3 x sqrt(4 / 16).
    from trainer.train.distribute import learning_rate_for

    assert learning_rate_for(ab.arm_plan(base, 4, 8)) == pytest.approx(1e-3 * math.sqrt(0.25))


def test_the_planner_picks_from_the_measured_step_times(data_dir):
    # 9 training pairs x 4 crops of 32: 36 crops. Steps 0.1 s at 4, 0.13 s at 8, 0.2 s at
    # 16: in 10 s, 16 buys 42 updates (21 epochs), 8 buys 65 (13 epochs), 4 buys 81 but in
    # 9 epochs: the objective (epochs and updates) keeps 8.
    rows = [
        {"micro_batch": 4, "images_per_s": 40.0},
        {"micro_batch": 8, "images_per_s": 60.0},
        {"micro_batch": 16, "images_per_s": 80.0},
    ]
    pick = ab.planner_pick(_base(data_dir), rows, 10.0, data_dir, "images", "masks")
    assert (pick["effective_batch"], pick["micro_batch"], pick["accumulation_steps"]) == (8, 8, 1)
    assert pick["reason"].startswith(
        "the time budget buys 42 updates at effective batch 16; 8 buys 65, 4 buys 81 "
        "(not taken: 9 epochs instead of 13, score "
    )


def test_the_table_has_one_row_per_arm():
    runs = [
        {
            "effective_batch": b,
            "test_dice": d,
            "optimizer_updates": u,
            "epochs": 2,
            "images_per_s": 5.0,
        }
        for b, d, u in [(16, 0.5, 10), (16, 0.7, 12), (4, 0.8, 40)]
    ]
    arm = {"micro_batch": 4, "learning_rate": 5e-4}
    doc = {
        "seconds_per_arm": 300.0,
        "masks": "mitochondria",
        "seeds": [0, 1],
        "quick": False,
        "command": "python benchmarks/updates_ab.py --out x --minutes 5",
        "wall_s": 1234.0,
        "arms": [
            {
                **arm,
                "effective_batch": 16,
                "accumulation_steps": 4,
                "test_dice": ab.summary([0.5, 0.7]),
            },
            {**arm, "effective_batch": 4, "accumulation_steps": 1, "test_dice": ab.summary([0.8])},
        ],
        "planner_pick": {"effective_batch": 4, "reason": "the time budget buys 11 updates"},
        "runs": runs,
    }
    text = ab.table(doc)
    assert "| 16 | 4 x 4 | 5.00e-04 | 11 | 2.0 | 5.0 | 0.600 (0.141) | 0.500, 0.700 |" in text
    assert "| 4 | 4 x 1 | 5.00e-04 | 40 | 2.0 | 5.0 | 0.800 (-) | 0.800 |" in text
    assert "The planner takes effective batch 4: the time budget buys 11 updates." in text
