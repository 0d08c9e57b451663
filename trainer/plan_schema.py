"""The plan's JSON Schema (draft 2020-12), generated from the plan dataclasses and their rules.

docs/plan.schema.json is this module's output, committed so that editors and other tools
can check a plan without fitplan (a test keeps it equal to what the code generates).
Regenerate it after changing a field or a rule:

    .venv/bin/python -m trainer.plan_schema > docs/plan.schema.json

The schema says what each field accepts on its own. What JSON Schema cannot say is left
to fitplan and named in `$comment`s: sorted lists, and the rules that tie fields together
(`trainer.plan._check_combinations`).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from trainer.plan import Plan
from trainer.plan_rules import rules, to_json

DRAFT = "https://json-schema.org/draft/2020-12/schema"
NOTE_KEYS = "^(x-|_)"  # top-level free-form notes, kept as written

_COMBINED = (
    "Also checked by fitplan: replicas is 1 when strategy is 'default'; "
    "optimizer.reference_batch is set when optimizer.lr_scaling is not 'none'; "
    "data.classes equals the length of data.mask_values when both are set."
)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a plan file, as a dict."""
    schema = {
        "$schema": DRAFT,
        "title": "fitplan training plan",
        "description": "A plan for `fitplan train --plan` (docs/plan-schema.md).",
        "$comment": _COMBINED,
        **_object(Plan),
    }
    # The dataclass defaults `version` for plans built in Python; a plan file must state it.
    del schema["properties"]["version"]["default"]
    schema["required"].insert(0, "version")
    schema["patternProperties"] = {NOTE_KEYS: {"description": "free-form note, kept as written"}}
    return schema


def render() -> str:
    """The schema as docs/plan.schema.json holds it."""
    return json.dumps(json_schema(), indent=2) + "\n"


def _object(cls: type) -> dict[str, Any]:
    properties, required = {}, []
    for name, (f, r) in rules(cls).items():
        if r.spec is not None:
            properties[name] = _object(r.spec)
        else:
            properties[name] = _property(f, r.schema, r.note)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(name)
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = required
    out["additionalProperties"] = False
    return out


def _property(f: dataclasses.Field, schema: dict[str, Any], note: str | None) -> dict[str, Any]:
    out = dict(schema)
    if f.default is None:  # a field whose default is None accepts null
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
        else:
            out["type"] = [out["type"], "null"]
    if f.default is not dataclasses.MISSING:
        out["default"] = to_json(f.default)
    if note:
        out["$comment"] = note
    return out


if __name__ == "__main__":
    print(render(), end="")
