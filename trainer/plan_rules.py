"""The machinery behind `trainer.plan`: field rules, one validator, JSON in and out.

Each plan field is declared once with its rule next to it, e.g.
`micro_batch: int = rule(integer(1))` or `data: DataSpec = part(DataSpec, required=True)`.
One `Rule` gives the check (`check_fields`), the error text ("must be <expected>") and the
field's JSON Schema (`trainer.plan_schema`), so the three cannot disagree. A field whose
default is `None` also accepts `null`. Rules that tie two fields together are small explicit
functions in `trainer.plan`. `build` turns parsed JSON into constructor arguments (unknown
keys refused with a did-you-mean), `to_json` goes back, `parse_json` refuses NaN and
Infinity naming the field.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
from collections.abc import Callable
from dataclasses import MISSING, dataclass
from typing import Any

from trainer.errors import PlanError


@dataclass(frozen=True)
class Rule:
    """What one field accepts.

    Args:
        expected: completes "plan field `name` must be ..." in the error message.
        schema: the JSON Schema (draft 2020-12) of an accepted non-null value.
        test: whether a non-null value is accepted.
        spec: the dataclass of a nested object (its fields carry their own rules).
        hint: a hint added to the error.
        note: what `test` checks beyond `schema` (JSON Schema cannot say it).
    """

    expected: str
    schema: dict[str, Any]
    test: Callable[[Any], bool]
    spec: type | None = None
    hint: str | None = None
    note: str | None = None


def rule(r: Rule, *, default: Any = MISSING) -> Any:
    """A dataclass field checked by `r`; without `default` the field is required."""
    return dataclasses.field(default=default, metadata={"rule": r})


def part(spec: type, *, required: bool = False) -> Any:
    """A field holding the nested dataclass `spec`; its default is `spec()`."""
    r = Rule("an object", {"type": "object"}, lambda v: isinstance(v, spec), spec=spec)
    return dataclasses.field(default_factory=MISSING if required else spec, metadata={"rule": r})


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def integer(minimum: int, *, multiple_of: int | None = None) -> Rule:
    schema: dict[str, Any] = {"type": "integer", "minimum": minimum}
    if multiple_of is not None:
        schema["multipleOf"] = multiple_of
    return Rule(
        f"an integer >= {minimum}",
        schema,
        lambda v: is_int(v) and v >= minimum and (multiple_of is None or v % multiple_of == 0),
    )


def number(low: float, high: float | None = None, *, open_low=False, open_high=False) -> Rule:
    """A finite number in the interval from `low` to `high` (`None`: unbounded)."""
    schema: dict[str, Any] = {"type": "number", "exclusiveMinimum" if open_low else "minimum": low}
    if high is None:
        expected = f"a finite number {'>' if open_low else '>='} {low}"
    else:
        expected = f"a number in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
        schema["exclusiveMaximum" if open_high else "maximum"] = high

    def test(v: Any) -> bool:
        return (
            is_number(v)
            and (v > low if open_low else v >= low)
            and (high is None or (v < high if open_high else v <= high))
        )

    return Rule(expected, schema, test)


def choice(options: tuple[Any, ...]) -> Rule:
    return Rule(
        "one of " + ", ".join(repr(c) for c in options),
        {"enum": list(options)},
        lambda v: v in options,
    )


def text(expected: str) -> Rule:
    """A non-empty string."""
    return Rule(
        expected, {"type": "string", "minLength": 1}, lambda v: isinstance(v, str) and v != ""
    )


def const(value: Any, *, hint: str) -> Rule:
    return Rule(repr(value), {"const": value}, lambda v: v == value, hint=hint)


FLAG = Rule("true, false or null", {"type": "boolean"}, lambda v: isinstance(v, bool))
COLOURS = Rule(
    'a list of at least 2 colours "#rrggbb"',
    {"type": "array", "items": {"type": "string", "minLength": 7}, "minItems": 2},
    lambda v: (
        isinstance(v, (list, tuple))
        and len(v) >= 2
        and all(isinstance(c, str) and re.fullmatch(r"#[0-9a-fA-F]{6}", c) for c in v)
    ),
    note='each colour is "#" and 6 hex digits',
)
MAPPING = Rule("an object or null", {"type": "object"}, lambda v: isinstance(v, dict))


def array(
    item: Rule, expected: str, *, size: tuple[int, int | None], unique=False, ordered=False
) -> Rule:
    """A list (a tuple once loaded) of `item`s; `ordered`: each item <= the next."""
    lo, hi = size
    schema: dict[str, Any] = {"type": "array", "items": item.schema, "minItems": lo}
    if hi is not None:
        schema["maxItems"] = hi
    if unique:
        schema["uniqueItems"] = True

    def test(v: Any) -> bool:
        return (
            isinstance(v, (list, tuple))
            and lo <= len(v) <= (hi if hi is not None else len(v))
            and all(item.test(x) for x in v)
            and (not unique or len(set(v)) == len(v))
            and (not ordered or all(a <= b for a, b in zip(v, v[1:], strict=False)))
        )

    return Rule(expected, schema, test, note="sorted: each item <= the next" if ordered else None)


def rules(cls: type) -> dict[str, tuple[dataclasses.Field, Rule]]:
    """The fields of a plan dataclass that a plan file holds, with their rules, in order."""
    return {
        f.name: (f, f.metadata["rule"]) for f in dataclasses.fields(cls) if "rule" in f.metadata
    }


def field_error(name: str, expected: str, value: Any, hint: str | None = None) -> PlanError:
    return PlanError(
        f"plan field `{name}` must be {expected}. Received: {name}={value!r}", hint=hint
    )


def check_fields(obj: Any, prefix: str = "") -> None:
    """Raise `PlanError` naming the first field of `obj` (nested specs included) its rule refuses."""
    for name, (f, r) in rules(type(obj)).items():
        value = getattr(obj, name)
        if value is None and f.default is None:
            continue
        if not r.test(value):
            raise field_error(prefix + name, r.expected, value, r.hint)
        if r.spec is not None:
            check_fields(value, f"{prefix}{name}.")


def build(cls: type, raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Constructor arguments for `cls` from parsed JSON: unknown and missing keys refused,
    nested objects built, JSON lists made tuples where the field holds a tuple."""
    # `notes` carries no rule: it is the dataclass's home for `x-` keys, not a key a plan
    # file may hold (accepting it would silently drop what a user wrote there).
    fields = rules(cls)
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        name = prefix + unknown[0]
        close = difflib.get_close_matches(unknown[0], sorted(fields), n=1)
        raise PlanError(
            f"plan field `{name}` is not a known field"
            + (f"; did you mean `{prefix}{close[0]}`?" if close else ""),
            hint="see docs/plan-schema.md; free-form notes go in top-level keys starting with 'x-'",
        )
    for n, (f, _) in fields.items():
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            if n not in raw:
                raise PlanError(f"plan field `{prefix}{n}` is missing")
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        r = fields[key][1]
        if r.spec is not None:
            if not isinstance(value, dict):
                raise field_error(prefix + key, r.expected, value)
            kwargs[key] = r.spec(**build(r.spec, value, prefix=f"{prefix}{key}."))
        elif isinstance(value, list) and r.schema.get("type") == "array":
            kwargs[key] = tuple(value)
        else:
            kwargs[key] = value
    return kwargs


def to_json(v: Any) -> Any:
    """`v` with dataclasses as objects and tuples as lists, as `json` writes them."""
    if dataclasses.is_dataclass(v):
        return {f.name: to_json(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, (tuple, list)):
        return [to_json(x) for x in v]
    if isinstance(v, dict):
        return {k: to_json(x) for k, x in v.items()}
    return v


def parse_json(text: str) -> Any:
    """Parsed JSON; `PlanError` for invalid JSON or a non-finite number (naming its field)."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise PlanError(
            f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from exc
    except ValueError as exc:
        field_name, constant = _non_finite_field(json.loads(text, parse_constant=_NonFinite))
        raise PlanError(
            f"plan field `{field_name or '?'}` must be a finite number. "
            f"Received: {field_name}={constant}"
        ) from exc


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in a plan (numbers must be finite)")


class _NonFinite(str):
    """`NaN`, `Infinity` or `-Infinity` met while parsing, kept to name its field."""


def _non_finite_field(obj: Any, prefix: str = "") -> tuple[str, str]:
    """The dotted path and constant of the first `_NonFinite` in parsed JSON."""
    if isinstance(obj, _NonFinite):
        return prefix or "(top level)", str(obj)
    if isinstance(obj, dict):
        items = [(f"{prefix}.{k}" if prefix else str(k), v) for k, v in obj.items()]
    elif isinstance(obj, list):
        items = [(f"{prefix}[{i}]", v) for i, v in enumerate(obj)]
    else:
        items = []
    for name, value in items:
        found = _non_finite_field(value, name)
        if found[0] != "":
            return found
    return "", ""
