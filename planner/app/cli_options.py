"""Options more than one command shares, each checked while the command line is parsed.

A check here runs before the command's body, so a bad value is a usage error (exit 2,
naming the option and the valid choices) before any probe, scan or TensorFlow import.
Conventions (docs/cli.md): `--out FILE` names a file a command writes, `--out-dir DIR`
a folder; DATA is positional where the dataset is the command's input and `--data DIR`
overrides the dataset a plan or run already names. Renamed options keep their old name
one release as a hidden alias (`renamed`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from planner.app.cli_app import err
from planner.app.units import parse_bytes, parse_duration
from planner.search import presets
from trainer.errors import FitplanError, PlanError
from trainer.plan import BACKBONES, PRECISIONS, Plan

WEIGHTS = ("none", "imagenet")
FORMATS = ("keras", "savedmodel", "tflite")
QUANTIZE = ("float16", "int8")


def _usage(fn):
    """A parser's `FitplanError` becomes typer's usage error (exit 2)."""

    def check(value):
        if value is None:
            return value
        try:
            fn(value)
        except FitplanError as exc:
            raise typer.BadParameter(str(exc)) from None
        return value

    return check


def _items(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _one_of(allowed: tuple[str, ...]):
    def check(value: str | None) -> str | None:
        if value is None:
            return value
        items = _items(value)
        bad = [v for v in items if v not in allowed]
        if bad or not items:
            raise typer.BadParameter(
                f"{bad[0] if bad else value!r} is not one of: {', '.join(allowed)}"
            )
        return value

    return check


def _check_sizes(value: str | None) -> str | None:
    if value is None:
        return value
    items = _items(value)
    if not items or not all(t.isdigit() and int(t) >= 32 and int(t) % 32 == 0 for t in items):
        raise typer.BadParameter(
            f"{value!r}: give comma-separated square sides, each a multiple of 32 and >= 32 "
            "(e.g. 256,384)"
        )
    return value


def _check_weights(value: str | None) -> str | None:
    if value is None or value in WEIGHTS or Path(value).expanduser().is_file():
        return value
    raise typer.BadParameter(f"{value!r} is not one of: none, imagenet, or an existing file")


def _check_settings(values: list[str] | None) -> list[str] | None:
    if values:
        apply_settings(_PROBE_PLAN, values)  # types and choices, before any work
    return values


def _check_callbacks(values: list[str] | None) -> list[str] | None:
    for spec in values or []:
        module, sep, attr = spec.partition(":")
        if not (sep and module and attr):
            raise typer.BadParameter(f"{spec!r}: give MODULE:FACTORY, e.g. my_callbacks:make")
    return values


BudgetMemoryOpt = Annotated[
    str | None,
    typer.Option(
        "--budget-memory",
        help="Memory the run may use, e.g. 4GiB, 512MiB, 6GB (default: probed).",
        callback=_usage(parse_bytes),
    ),
]
BudgetTimeOpt = Annotated[
    str | None,
    typer.Option(
        "--budget-time",
        help="Wall time for training, e.g. 20m, 1h30m, 90s.",
        callback=_usage(parse_duration),
    ),
]
BackbonesOpt = Annotated[
    str | None,
    typer.Option(
        "--backbones",
        help=f"Comma-separated encoders to consider, of: {', '.join(BACKBONES)} "
        f"(default: {','.join(presets.DEFAULT_BACKBONES)}).",
        callback=_one_of(BACKBONES),
    ),
]
SizesOpt = Annotated[
    str | None,
    typer.Option(
        "--sizes",
        help="Comma-separated square crop sides, multiples of 32 "
        f"(default: {','.join(map(str, presets.DEFAULT_SIDES))}).",
        callback=_check_sizes,
    ),
]
PrecisionsOpt = Annotated[
    str | None,
    typer.Option(
        "--precisions",
        help=f"Comma-separated precisions to consider, of: {', '.join(PRECISIONS)} "
        "(default: what the device supports).",
        callback=_one_of(PRECISIONS),
    ),
]
WeightsOpt = Annotated[
    str,
    typer.Option(
        "--weights",
        help="Encoder weights: none, imagenet (Keras cache, downloaded once if absent; docs/models.md) or a weights file.",
        callback=_check_weights,
    ),
]
EffectiveBatchOpt = Annotated[
    int | None,
    typer.Option(
        "--effective-batch",
        min=1,
        help="Images per optimizer update (unset: 16, lower when --budget-time buys few updates).",
    ),
]
HeadroomOpt = Annotated[
    float,
    typer.Option("--headroom", min=0.0, max=0.9, help="Share of the memory budget kept free."),
]
DevicesOpt = Annotated[
    int, typer.Option("--devices", min=0, help="GPUs per worker (0: all visible).")
]
WorkersOpt = Annotated[int, typer.Option("--workers", min=1, help="Hosts of a multi-worker run.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a plan field, dotted for nested ones (repeatable): "
        "--set micro_batch=4 --set augment.preset=gentle. Checked like the plan file.",
        callback=_check_settings,
    ),
]
CallbacksOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--callbacks",
        metavar="MODULE:FACTORY",
        help="Add the Keras callback(s) FACTORY() returns (repeatable); MODULE is imported "
        "from the current folder or the environment.",
        callback=_check_callbacks,
    ),
]
FormatOpt = Annotated[
    str,
    typer.Option(
        "--format",
        help=f"Export format, one of: {', '.join(FORMATS)} (savedmodel is a folder).",
        callback=_one_of(FORMATS),
    ),
]
QuantizeOpt = Annotated[
    str | None,
    typer.Option(
        "--quantize",
        help=f"tflite only, one of: {', '.join(QUANTIZE)} (int8 reads the data to calibrate).",
        callback=_one_of(QUANTIZE),
    ),
]


def renamed(new_value: Any, old_value: Any, new: str, old: str) -> Any:
    """The value of an option given by its new name or by its hidden old one (one release).

    Raises:
        typer.BadParameter: both names were given.
    """
    if old_value is None:
        return new_value
    if new_value is not None:
        raise typer.BadParameter(f"give {new} only ({old} is its old name)")
    err.print(
        f"[yellow]warning:[/] {old} is now {new}; the old name goes in the next release",
        highlight=False,
    )
    return old_value


def refuse(reason: str, **given: Any) -> None:
    """Usage error for options that do not act in this mode: `refuse("with --resume", out=x)`."""
    names = [f"--{k.replace('_', '-')}" for k, v in given.items() if v not in (None, False, [])]
    if names:
        raise typer.BadParameter(f"{', '.join(names)} cannot be used {reason}")


# -- --set KEY=VALUE --------------------------------------------------------------

# Only the fields `apply_settings` checks types and choices against before any work.
_PROBE_PLAN = Plan.from_dict(
    {"version": 1, "backbone": "unet_small", "input_size": [32, 32], "micro_batch": 1,
     "data": {"path": "."}}
)  # fmt: skip


def apply_settings(plan: Plan, settings: list[str]) -> Plan:
    """`plan` with each `KEY=VALUE` applied, validated as a plan file is.

    VALUE is read as JSON when it parses (`4`, `0.5`, `true`, `[256,256]`, `null`),
    else as a string (`medical`). KEY is a field, dotted for nested fields.

    Raises:
        typer.BadParameter: a malformed setting, an unknown field or a value the plan
            rules refuse (the message names the setting and the field).
    """
    raw = plan.to_dict()
    for setting in settings:
        key, sep, text = setting.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise typer.BadParameter(f"{setting!r}: give KEY=VALUE, e.g. micro_batch=4")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        node = raw
        for part in parts[:-1]:
            if node.get(part) is None:
                node[part] = {}
            if not isinstance(node[part], dict):
                raise typer.BadParameter(f"{setting!r}: plan field {part!r} has no fields")
            node = node[part]
        node[parts[-1]] = value
        try:
            Plan.from_dict(raw)
        except PlanError as exc:
            raise typer.BadParameter(f"{setting!r}: {exc}") from None
    return Plan.from_dict(raw)


def planner_kwargs(
    budget_memory: str | None,
    budget_time: str | None,
    backbones: str | None,
    sizes: str | None,
    precisions: str | None,
    effective_batch: int | None,
    headroom: float | None,
    weights: str | None,
    devices: int | None,
    workers: int | None,
) -> dict[str, Any]:
    """`planner.make_plan.make_plan` keyword arguments from the planner's options.

    Shared by `fitplan plan` and `fitplan train --auto`; `None` keeps make_plan's default.
    """
    from planner.app.units import parse_int_list, parse_list

    given = {
        "budget_memory": parse_bytes(budget_memory) if budget_memory else None,
        "budget_time_s": parse_duration(budget_time) if budget_time else None,
        "backbones": parse_list(backbones, "--backbones"),
        "sizes": parse_int_list(sizes, "--sizes"),
        "precisions": parse_list(precisions, "--precisions"),
        "effective_batch": effective_batch,
        "headroom": headroom,
        "weights": weights,
        "workers": workers,
    }
    out = {k: v for k, v in given.items() if v is not None}
    if devices is not None:
        out["devices"] = devices or None  # 0: every visible GPU
    return out
