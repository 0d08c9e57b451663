"""Candidates from presets, and the analytic prune (no TensorFlow)."""

from __future__ import annotations

import pytest

from planner.search import presets
from planner.search.candidates import (
    Candidate,
    analytic_estimate,
    default_candidates,
    input_sizes,
    precisions_for,
    prune,
    trial_normalization,
    trial_spec,
)

GIB = 2**30


def test_input_sizes_are_capped_by_the_image():
    assert input_sizes((768, 1024), (128, 256, 384, 512)) == [
        (128, 128),
        (256, 256),
        (384, 384),
        (512, 512),
    ]
    assert input_sizes((300, 1000), (256, 384)) == [(256, 256)]


def test_small_images_train_whole_at_multiples_of_32():
    assert input_sizes((100, 150), (256, 384)) == [(96, 128)]
    assert input_sizes((20, 20), (256,)) == [(32, 32)]


def test_input_sizes_refuse_sides_that_are_not_multiples_of_32():
    with pytest.raises(ValueError, match="multiples of 32"):
        input_sizes((512, 512), (250,))


def test_precisions_by_device():
    assert precisions_for("cpu") == ("float32",)
    # bfloat16 conv backprop was 16-24x slower than float32 on this CPU: an option, not the default
    assert precisions_for("cpu", bf16=True) == ("float32", "mixed_bfloat16")
    assert "mixed_float16" not in precisions_for("cpu", bf16=True)  # 5.7x slower on CPU
    assert precisions_for("gpu")[0] == "mixed_float16"
    with pytest.raises(ValueError, match="device"):
        precisions_for("tpu")


def test_default_candidates_are_few():
    cands = default_candidates((768, 1024), device="cpu", bf16=True)
    assert len(cands) == len(presets.DEFAULT_BACKBONES) * len(presets.DEFAULT_SIDES)
    assert {c.precision for c in cands} == {"float32"}
    assert {c.precision for c in default_candidates((768, 1024), device="gpu")} == {"mixed_float16"}
    explicit = default_candidates(
        (768, 1024), backbones=["resnet50"], sides=[512], precisions=["float32", "mixed_bfloat16"]
    )
    assert [c.label for c in explicit] == [
        "resnet50 512x512 float32",
        "resnet50 512x512 mixed_bfloat16",
    ]


def test_candidate_refuses_unknown_backbone():
    with pytest.raises(ValueError, match="backbone"):
        Candidate("vgg16", (256, 256))


def test_estimate_grows_with_batch_pixels_and_model():
    e1 = analytic_estimate("mobilenet_v3_small", (256, 256), 1)
    e4 = analytic_estimate("mobilenet_v3_small", (256, 256), 4)
    e1_big = analytic_estimate("mobilenet_v3_small", (512, 512), 1)
    assert e1 < e4 and e1 < e1_big
    # equal pixels x batch -> equal activation part (MEASURED.md: equal peaks within 1%)
    assert analytic_estimate("unet_small", (512, 512), 1) == analytic_estimate(
        "unet_small", (256, 256), 4
    )
    assert analytic_estimate("resnet50", (256, 256), 1) > e1
    assert analytic_estimate("mobilenet_v3_small", (256, 256), 4, "mixed_bfloat16") < e4
    assert e1 > presets.RUNTIME_OVERHEAD_BYTES["cpu"]


def test_prune_removes_only_what_cannot_fit_at_batch_one_and_says_why():
    cands = [Candidate("unet_small", (256, 256)), Candidate("resnet50", (512, 512))]
    need = analytic_estimate("resnet50", (512, 512), 1)
    kept, pruned = prune(cands, budget_bytes=int(need * 0.5), headroom=0.1)
    assert [c.backbone for c in kept] == ["unet_small"]
    assert pruned[0].candidate.backbone == "resnet50"
    assert pruned[0].estimate_bytes == need
    assert "at micro-batch 1" in pruned[0].reason and "not measured" in pruned[0].reason
    kept, pruned = prune(cands, budget_bytes=64 * GIB)
    assert len(kept) == 2 and pruned == []


def test_prune_tolerates_an_estimate_slightly_over_budget():
    c = Candidate("efficientnet_b0", (256, 256))
    need = analytic_estimate(c.backbone, c.input_size, 1)
    kept, _ = prune([c], budget_bytes=int(need / 0.9 / 1.2), headroom=0.1)  # 1.2x over < 1.25
    assert kept == [c]


def test_trials_measure_in_the_batchnorm_mode_of_the_plan_they_feed():
    c = Candidate("unet_small", (256, 256))
    at_8 = analytic_estimate(c.backbone, c.input_size, 8)
    pre = dict(weights="imagenet")
    # Pretrained, room for micro-batch 8: the plan will train BatchNorm, the trial too.
    assert trial_normalization(c, allowed_bytes=at_8, max_micro_batch=16, **pre) == "train"
    # One byte short of 8: the plan stays below 8 with frozen BatchNorm.
    assert trial_normalization(c, allowed_bytes=at_8 - 1, max_micro_batch=16, **pre) == "frozen"
    # A cap below 8 (e.g. effective batch 16 over 4 replicas) never trains BatchNorm.
    assert trial_normalization(c, allowed_bytes=64 * GIB, max_micro_batch=4, **pre) == "frozen"
    # From scratch every plan trains BatchNorm, whatever the budget.
    assert trial_normalization(c, allowed_bytes=1, max_micro_batch=4) == "train"


def test_trial_spec_from_a_candidate():
    c = Candidate("efficientnet_b0", (384, 384), "mixed_bfloat16")
    spec = trial_spec(c, num_classes=3, device="cpu", normalization="frozen")
    assert (spec.backbone, spec.input_size, spec.precision) == (
        "efficientnet_b0",
        (384, 384),
        "mixed_bfloat16",
    )
    assert spec.micro_batches == presets.TRIAL_MICRO_BATCHES
    assert spec.num_classes == 3 and spec.normalization == "frozen"
    assert spec.warmup_steps == presets.TRIAL_WARMUP_STEPS
    assert spec.to_plan().precision == "mixed_bfloat16"  # a valid plan for the child
