"""The plan contract: defaults, round trip, and validation that names the field."""

import json

import pytest

from trainer.errors import PlanError
from trainer.plan import Plan, load_plan, save_plan

MINIMAL = {
    "version": 1,
    "backbone": "mobilenet_v3_small",
    "input_size": [256, 256],
    "micro_batch": 4,
    "accumulation_steps": 2,
    "weights": "none",
    "data": {"path": "DATA", "masks": "mitochondria"},
}


def test_minimal_plan_from_the_issue_is_valid_with_documented_defaults():
    plan = Plan.from_dict(MINIMAL)
    assert plan.input_size == (256, 256)
    assert plan.effective_batch == 8
    assert plan.precision == "float32"
    assert plan.data.images == "images" and plan.data.masks == "mitochondria"
    assert plan.data.cache == "stream"
    assert plan.resolved_normalization == "train"  # from scratch: always trained
    assert plan.augment.resolved()["hflip"] is True


def test_round_trip_through_file(tmp_path):
    plan = Plan.from_dict({**MINIMAL, "x-comment": "kept", "prediction": {"peak_bytes": 5}})
    path = tmp_path / "plan.json"
    save_plan(plan, path)
    again = load_plan(path)
    assert again == plan
    raw = json.loads(path.read_text())
    assert raw["x-comment"] == "kept"
    assert raw["version"] == 1
    assert list(raw)[:3] == ["version", "backbone", "input_size"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"micro_batch": 0}, "micro_batch"),
        ({"micro_batch": 2.5}, "micro_batch"),
        ({"accumulation_steps": -1}, "accumulation_steps"),
        ({"input_size": [250, 256]}, "input_size"),
        ({"input_size": [256]}, "input_size"),
        ({"backbone": "vgg99"}, "backbone"),
        ({"precision": "float8"}, "precision"),
        ({"version": 2}, "version"),
        ({"optimizer": {"learning_rate": -0.1}}, "optimizer.learning_rate"),
        ({"optimizer": {"learning_rate": 0}}, "optimizer.learning_rate"),
        ({"data": {"path": "D", "cache": "disk"}}, "data.cache"),
        ({"data": {"path": "D", "val_fraction": 1.0}}, "data.val_fraction"),
        ({"data": {"path": "D", "mask_values": [255, 0]}}, "data.mask_values"),
        ({"data": {"masks": "m"}}, "data.path"),
        ({"augment": {"scale": [1.5, 1.0]}}, "augment.scale"),
        ({"lr_schedule": {"factor": 1.5}}, "lr_schedule.factor"),
        ({"early_stopping": {"monitor": "accuracy"}}, "early_stopping.monitor"),
        ({"strategy": "default", "replicas": 2}, "replicas"),
        ({"micro_bacth": 4}, "micro_bacth"),
        ({"optimizer": {"lr": 0.1}}, "optimizer.lr"),
    ],
)
def test_validation_names_the_field(change, field):
    with pytest.raises(PlanError) as info:
        Plan.from_dict({**MINIMAL, **change})
    assert f"`{field}`" in str(info.value)


def test_error_echoes_received_value():
    with pytest.raises(PlanError, match=r"Received: micro_batch=0"):
        Plan.from_dict({**MINIMAL, "micro_batch": 0})


def test_not_json_names_file_and_position(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"version": 1,,}')
    with pytest.raises(PlanError, match=r"bad.json: not valid JSON \(line 1"):
        load_plan(path)


def test_nan_is_refused(tmp_path):
    path = tmp_path / "nan.json"
    path.write_text(json.dumps({**MINIMAL, "optimizer": {"learning_rate": float("nan")}}))
    with pytest.raises(PlanError, match="NaN"):
        load_plan(path)


def test_missing_file_is_plan_error(tmp_path):
    with pytest.raises(PlanError, match="not found"):
        load_plan(tmp_path / "nope.json")


def test_normalization_auto_trains_batchnorm_from_scratch_and_pretrained_from_eight():
    pre = {**MINIMAL, "weights": "imagenet"}
    assert Plan.from_dict({**pre, "micro_batch": 7}).resolved_normalization == "frozen"
    assert Plan.from_dict({**pre, "micro_batch": 8}).resolved_normalization == "train"
    assert Plan.from_dict({**MINIMAL, "micro_batch": 1}).resolved_normalization == "train"
    assert Plan.from_dict({**MINIMAL, "micro_batch": 8}).resolved_normalization == "train"
    assert Plan.from_dict({**MINIMAL, "normalization": "group"}).resolved_normalization == "group"


def test_num_classes_from_mask_values():
    plan = Plan.from_dict({**MINIMAL, "data": {"path": "D", "mask_values": [0, 1, 2]}})
    assert plan.data.num_classes == 3
    with pytest.raises(PlanError, match="data.classes"):
        Plan.from_dict({**MINIMAL, "data": {"path": "D", "mask_values": [0, 255], "classes": 3}})
