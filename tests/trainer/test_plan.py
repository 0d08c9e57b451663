"""The plan contract: defaults, round trip, validation that names the field, JSON Schema."""

import dataclasses
import json
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from trainer.errors import PlanError
from trainer.plan import Plan, load_plan, save_plan
from trainer.plan_schema import json_schema, render

DOCS = Path(__file__).resolve().parents[2] / "docs"

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


BAD = [
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
    ({"optimizer": {"lr_scaling": "sqrt"}}, "optimizer.reference_batch"),
    ({"data": {"path": "D", "mask_values": [0, 0]}}, "data.mask_values"),
    ({"data": {"path": "D", "classes": 1}}, "data.classes"),
    ({"data": {"path": "D", "image_scale": 0}}, "data.image_scale"),
    ({"augment": {"hflip": 1}}, "augment.hflip"),
    ({"time_limit_s": 0}, "time_limit_s"),
    ({"weights": ""}, "weights"),
    ({"target": {"device_name": ""}}, "target.device_name"),
    ({"prediction": [1]}, "prediction"),
]
# What JSON Schema cannot say, checked by fitplan alone (the schema's `$comment`s name it).
FITPLAN_ONLY = [
    {"data": {"path": "D", "mask_values": [255, 0]}},
    {"augment": {"scale": [1.5, 1.0]}},
    {"strategy": "default", "replicas": 2},
    {"optimizer": {"lr_scaling": "sqrt"}},
]


@pytest.mark.parametrize(("change", "field"), BAD)
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


# -- the JSON Schema -----------------------------------------------------------------------


def test_committed_schema_is_what_the_code_generates():
    assert (DOCS / "plan.schema.json").read_text(encoding="utf-8") == render(), (
        "regenerate: .venv/bin/python -m trainer.plan_schema > docs/plan.schema.json"
    )


def test_the_documented_command_prints_the_schema():
    cmd = [sys.executable, "-m", "trainer.plan_schema"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=DOCS.parent)
    assert done.stdout == render() and done.stderr == ""


def _nested(cls: type) -> dict[str, type]:
    hints = typing.get_type_hints(cls)
    return {name: t for name, t in hints.items() if dataclasses.is_dataclass(t)}


def test_schema_properties_are_the_dataclass_fields():
    def check(cls: type, schema: dict, where: str) -> None:
        # `notes` holds the top-level `x-`/`_` keys: the schema's patternProperties.
        fields = {f.name for f in dataclasses.fields(cls)} - {"notes"}
        assert set(schema["properties"]) == fields, where
        assert schema["additionalProperties"] is False, where
        for name, spec in _nested(cls).items():
            check(spec, schema["properties"][name], f"{where}.{name}")

    check(Plan, json_schema(), "plan")


def test_every_field_is_documented_and_the_doc_names_no_other():
    tables: dict[str, set[str]] = {}
    section = None
    for line in (DOCS / "plan-schema.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            nested = re.match(r"## `(\w+)`", line)
            section = nested.group(1) if nested else ("" if line == "## Top-level fields" else None)
        elif section is not None and (row := re.match(r"\| `(\w+)` \|", line)):
            tables.setdefault(section, set()).add(row.group(1))
    fields = {"": {f.name for f in dataclasses.fields(Plan)} - {"notes"}}
    fields |= {name: {f.name for f in dataclasses.fields(s)} for name, s in _nested(Plan).items()}
    assert tables == fields


def test_plans_written_by_the_code_validate_against_the_schema(tmp_path, minimal_plan):
    every_field = minimal_plan(
        "D",
        data={"images": "img", "val": "V", "classes": 2, "mask_values": [0, 255]}
        | {"crops_per_image": 3, "fingerprint": "abc", "cache": "memory", "image_scale": 0.5}
        | {"class_names": ["bg", "fg"], "ignore_index": 7, "merge_rare": True}
        | {"normalization": "dataset", "intensity_range": [10, 4000]}
        | {"palette": ["#000000", "#FF0000"]},
        accumulation_steps=2,
        precision="mixed_bfloat16",
        weights="imagenet",
        normalization="frozen",
        optimizer={"name": "sgd", "clipnorm": 1.0, "lr_scaling": "sqrt", "reference_batch": 8},
        augment={"preset": "gentle", "hflip": False, "vflip": True, "rot90": True}
        | {"rotate_deg": 3, "scale": [0.9, 1.0], "brightness": 0.1, "contrast": 0.1},
        checkpoints={"keep": "best", "max_bytes": 10**9},
        steps_per_epoch=10,
        time_limit_s=60.5,
        strategy="mirrored",
        replicas=2,
        target={"device": "gpu", "device_name": "H100", "budget_bytes": 2**34}
        | {"budget_source": "probe", "device_uuids": ["GPU-a", "GPU-b"]}
        | {"device_memory_bytes": 2**36, "host_budget_bytes": 2**35},
        prediction={"peak_bytes": 5},
        evidence={"candidates": []},
        **{"x-by": "hand", "_comment": "kept"},
    )
    for plan in (Plan.from_dict(MINIMAL), every_field):
        save_plan(plan, tmp_path / "plan.json")
        written = json.loads((tmp_path / "plan.json").read_text())
        assert _schema_errors(json_schema(), written) == []
    assert None not in _leaves(json.loads((tmp_path / "plan.json").read_text()))


@pytest.mark.parametrize(("change", "field"), BAD)
def test_the_schema_refuses_what_validation_refuses(change, field):
    raw = {**MINIMAL, **change}
    errors = _schema_errors(json_schema(), raw)
    assert (errors == []) == (change in FITPLAN_ONLY), errors


def _leaves(value):
    if isinstance(value, dict):
        return [x for v in value.values() for x in _leaves(v)]
    return [value]


# A validator for the part of JSON Schema draft 2020-12 that trainer.plan_schema emits
# (jsonschema is not a dependency). It refuses a schema with any other keyword, so the
# schema cannot grow a constraint that these tests silently ignore.
_ANNOTATIONS = {"$schema", "title", "description", "$comment", "default"}
_KEYWORDS = {"type", "enum", "const", "minimum", "exclusiveMinimum", "maximum"}
_KEYWORDS |= {"exclusiveMaximum", "multipleOf", "minLength", "items", "minItems", "maxItems"}
_KEYWORDS |= {"uniqueItems", "properties", "required", "additionalProperties"}
_KEYWORDS |= {"patternProperties"}


def _is(value, json_type: str) -> bool:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return {
        "null": value is None,
        "boolean": isinstance(value, bool),
        "integer": number and float(value).is_integer(),
        "number": number,
        "string": isinstance(value, str),
        "array": isinstance(value, list),
        "object": isinstance(value, dict),
    }[json_type]


def _equal(a, b) -> bool:
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _schema_errors(schema: dict, value, path: str = "plan") -> list[str]:
    assert set(schema) <= _KEYWORDS | _ANNOTATIONS, set(schema) - _KEYWORDS - _ANNOTATIONS
    types = schema.get("type", [])
    if types and not any(_is(value, t) for t in ([types] if isinstance(types, str) else types)):
        return [f"{path}: not {types}"]
    if "enum" in schema and not any(_equal(value, e) for e in schema["enum"]):
        return [f"{path}: not one of {schema['enum']}"]
    if "const" in schema and not _equal(value, schema["const"]):
        return [f"{path}: not {schema['const']}"]
    errors = []
    if _is(value, "number"):
        bounds = {
            "minimum": lambda v, b: v >= b,
            "exclusiveMinimum": lambda v, b: v > b,
            "maximum": lambda v, b: v <= b,
            "exclusiveMaximum": lambda v, b: v < b,
            "multipleOf": lambda v, b: v % b == 0,
        }
        errors += [
            f"{path}: {k}" for k, ok in bounds.items() if k in schema and not ok(value, schema[k])
        ]
    if isinstance(value, str) and len(value) < schema.get("minLength", 0):
        errors.append(f"{path}: minLength")
    if isinstance(value, list):
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value)):
            errors.append(f"{path}: {len(value)} items")
        if schema.get("uniqueItems") and len({json.dumps(v) for v in value}) < len(value):
            errors.append(f"{path}: items not unique")
        for i, item in enumerate(value):
            errors += _schema_errors(schema.get("items", {}), item, f"{path}[{i}]")
    if isinstance(value, dict):
        errors += [f"{path}.{k}: missing" for k in schema.get("required", []) if k not in value]
        for key, item in value.items():
            patterns = [
                s for p, s in schema.get("patternProperties", {}).items() if re.search(p, key)
            ]
            if key in schema.get("properties", {}):
                errors += _schema_errors(schema["properties"][key], item, f"{path}.{key}")
            elif patterns:
                errors += [e for s in patterns for e in _schema_errors(s, item, f"{path}.{key}")]
            elif schema.get("additionalProperties", True) is False:
                errors.append(f"{path}.{key}: not allowed")
    return errors
