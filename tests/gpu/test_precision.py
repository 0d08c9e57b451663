"""Precision by compute capability: >= 8.0 mixed_bfloat16, 7.x mixed_float16 (loss
scaling), below 7.0 float32; and mixed_float16's loss scaling with accumulation."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pytest

from planner import make_plan
from planner.hardware import precision_advice
from planner.search import candidates as cand
from tests.gpu.fake_tf import FakeTF
from tests.plans import minimal_plan
from trainer.errors import FitplanWarning
from trainer.train.device import precision_for_capability
from trainer.train.setup import gpu_capability, precision_warning, set_precision


@pytest.mark.parametrize(
    "cc, policy",
    [((9, 0), "mixed_bfloat16"), ((8, 0), "mixed_bfloat16"), ((7, 5), "mixed_float16"),
     ((7, 0), "mixed_float16"), ((6, 1), "float32"), ((5, 2), "float32"), (None, "float32")],
)  # fmt: skip
def test_policy_by_compute_capability(cc, policy):
    assert precision_for_capability(cc) == policy


@pytest.mark.parametrize(
    "cc, policy", [("6.1", "float32"), ("7.5", "mixed_float16"), ("8.6", "mixed_bfloat16")]
)
def test_the_planner_measures_only_the_policy_the_gpu_calls_for(cc, policy):
    report = {"gpus": [{"index": 0, "compute_capability": cc}]}
    hw = {"precision_advice": precision_advice(report, {"device": "gpu", "device_index": 0})}
    ctx = SimpleNamespace(device="gpu", hardware=hw)
    cands = cand.default_candidates(
        (512, 512), device="gpu", bf16=False, precisions=make_plan._gpu_precision(ctx)
    )
    assert {c.precision for c in cands} == {policy}  # Pascal: float32, not mixed_float16


def plan(precision):
    return minimal_plan(accumulation_steps=2, precision=precision)


@pytest.mark.parametrize(
    "cc, precision, slow",
    [((7, 5), "mixed_bfloat16", True), ((6, 1), "mixed_float16", True),
     ((8, 0), "mixed_bfloat16", False), ((8, 0), "mixed_float16", False),
     ((6, 1), "float32", False)],
)  # fmt: skip
def test_training_warns_when_the_plans_precision_is_slow_on_this_gpu(cc, precision, slow):
    tf = FakeTF(cc=cc)
    assert gpu_capability(tf) == cc
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        set_precision(plan(precision), tf=tf)
    said = [w for w in caught if issubclass(w.category, FitplanWarning)]
    assert bool(said) == slow
    if slow:
        assert f"{cc[0]}.{cc[1]}" in str(said[0].message)
    assert precision_warning("float32", None) is None


@pytest.mark.slow
def test_mixed_float16_scales_the_loss_and_accumulates():
    """On the CPU (slowly): LossScaleOptimizer around the plan's optimizer, whose
    accumulation applies one update per `accumulation_steps` micro-batches."""
    import keras

    from trainer.train.setup import build_model_for_plan

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitplanWarning)  # mixed_float16 on a CPU is slow
        model = build_model_for_plan(plan("mixed_float16"), 2)
    opt = model.optimizer
    assert isinstance(opt, keras.optimizers.LossScaleOptimizer)
    assert opt.inner_optimizer.gradient_accumulation_steps == 2
    rng = np.random.default_rng(0)
    x = rng.random((2, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 2, (2, 32, 32, 1)).astype(np.float32)
    before = [v.numpy().copy() for v in model.trainable_variables]
    model.train_on_batch(x, y)
    middle = [v.numpy().copy() for v in model.trainable_variables]
    loss = model.train_on_batch(x, y)
    after = [v.numpy() for v in model.trainable_variables]
    assert all(np.array_equal(a, b) for a, b in zip(before, middle, strict=True))
    assert any(not np.array_equal(a, b) for a, b in zip(middle, after, strict=True))
    assert all(np.isfinite(v).all() for v in after) and np.isfinite(loss).all()
    keras.mixed_precision.set_global_policy("float32")
