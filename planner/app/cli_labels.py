"""The label and intensity options of `scan`, `plan` and `train` (issue 16, docs/data.md).

Each is checked while the command line is parsed (a usage error, exit 2, before any
work) and becomes plan `data` fields (`data_options`) or `fitplan scan` arguments
(`planner.scan.labels.scan_options`), so the three commands read them the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from planner.scan.labels import scan_options
from trainer.data.masks import class_fields, parse_classes
from trainer.plan import INTENSITY_MODES, Plan


def _classes(value: str | None) -> str | None:
    if value is not None:
        try:
            parse_classes(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


def _ignore(value: str | None) -> str | None:
    if value is not None and value != "none" and not (value.isdigit() and int(value) < 65536):
        raise typer.BadParameter(f"{value!r}: give a raw mask value 0-65535, or none")
    return value


def _palette(value: Path | None) -> Path | None:
    if value is not None:
        read_palette(value, usage=True)
    return value


def read_palette(path: Path, *, usage: bool = False) -> list[str]:
    """Class colours from a JSON file: `["#000000", "#800000"]` or `[[0, 0, 0], [128, 0, 0]]`
    (class k is entry k), or `{"0": ..., "1": ...}` keyed by class index."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        if isinstance(raw, dict):
            raw = [raw[k] for k in sorted(raw, key=int)]
        out = []
        for c in raw:
            if isinstance(c, str) and len(c) == 7 and c.startswith("#"):
                int(c[1:], 16)
                out.append(c.lower())
            elif isinstance(c, list) and len(c) == 3 and all(0 <= int(x) <= 255 for x in c):
                out.append("#" + "".join(f"{int(x):02x}" for x in c))
            else:
                raise ValueError(f"{c!r} is not a colour")
        if len(out) < 2:
            raise ValueError("at least 2 colours")
    except (OSError, ValueError, TypeError, KeyError) as exc:
        message = f"{path}: not a palette file ({exc}); give a JSON list of colours"
        if usage:
            raise typer.BadParameter(message) from None
        raise
    return out


ClassesOpt = Annotated[
    str | None,
    typer.Option(
        "--classes",
        metavar="VALUE:NAME,...",
        help="The classes: raw mask values with optional names (0:background,1:mito), "
        "or a count N (values 0..N-1). Default: inferred from the masks.",
        callback=_classes,
    ),
]
IgnoreIndexOpt = Annotated[
    str | None,
    typer.Option(
        "--ignore-index",
        metavar="VALUE|none",
        help="Raw mask value left out of loss and metrics (default: 255 when the masks "
        "hold it and a small set of class indices, as Pascal VOC); none: no ignore value.",
        callback=_ignore,
    ),
]
MergeRareOpt = Annotated[
    bool,
    typer.Option(
        "--merge-rare",
        help="Map mask values under 0.05% of the pixels to the nearest class (default: a "
        "rare value on a label grid stays a class, and scan names it).",
    ),
]
NormalizeOpt = Annotated[
    str | None,
    typer.Option(
        "--normalize",
        help=f"Images deeper than 8 bits, one of: {', '.join(INTENSITY_MODES)} "
        "(default image: each image's 0.5-99.5th percentile to [0, 1]).",
        callback=lambda v: _one(v, INTENSITY_MODES, "--normalize"),
    ),
]
PaletteOpt = Annotated[
    Path | None,
    typer.Option(
        "--palette",
        metavar="FILE.json",
        help="Colour masks: a JSON list of class colours (#rrggbb or [r, g, b]); class k "
        "is entry k. Indexed PNG masks need none (their palette index is the class).",
        callback=_palette,
    ),
]


def _one(value: str | None, allowed: tuple[str, ...], name: str) -> str | None:
    if value is not None and value not in allowed:
        raise typer.BadParameter(f"{value!r} is not one of: {', '.join(allowed)}")
    return value


def data_options(
    classes: str | None = None,
    ignore_index: str | None = None,
    merge_rare: bool = False,
    normalize: str | None = None,
    palette: Path | None = None,
) -> dict[str, Any]:
    """The plan `data` fields the options set (only those given)."""
    out: dict[str, Any] = {}
    if classes is not None:
        out.update({k: v for k, v in class_fields(parse_classes(classes)).items() if v})
    if ignore_index is not None:
        out["ignore_index"] = -1 if ignore_index == "none" else int(ignore_index)
    if merge_rare:
        out["merge_rare"] = True
    if normalize is not None:
        out["normalization"] = normalize
    if palette is not None:
        colours = read_palette(palette)
        out["palette"] = colours
        out.setdefault("mask_values", list(range(len(colours))))
    return out


def with_data(plan: Plan, fields: dict[str, Any]) -> Plan:
    """`plan` with these `data` fields set, validated like a plan file."""
    raw = plan.to_dict()
    raw["data"] = {**raw["data"], **fields}
    data = raw["data"]
    if data.get("normalization") == "dataset" and data.get("intensity_range") is None:
        from trainer.data.intensity import range_for

        data["intensity_range"] = range_for(data["path"], data["images"], data["masks"])
    return Plan.from_dict(raw)


__all__ = [
    "ClassesOpt",
    "IgnoreIndexOpt",
    "MergeRareOpt",
    "NormalizeOpt",
    "PaletteOpt",
    "data_options",
    "read_palette",
    "scan_options",
    "with_data",
]
