"""The user's label options between the scan and the plan (issue 16).

`--classes`, `--ignore-index` and `--merge-rare` arrive as plan `data` fields
(`planner.app.cli_labels.data_options`); the scan reads the masks with them
(`scan_options`), and the plan records what the scan found with them (`label_fields`),
so the trainer maps masks exactly as the scan counted them.
"""

from __future__ import annotations

from typing import Any


def scan_options(options: dict[str, Any]) -> dict[str, Any]:
    """`planner.scan.dataset.scan` keyword arguments from plan `data` fields."""
    out: dict[str, Any] = {}
    if options.get("mask_values") is not None:
        names = options.get("class_names") or [None] * len(options["mask_values"])
        out["classes"] = dict(zip(options["mask_values"], names, strict=True))
    if options.get("ignore_index") is not None:
        out["ignore_index"] = options["ignore_index"]
    if options.get("merge_rare"):
        out["merge_rare"] = True
    if options.get("palette"):
        out["palette"] = list(options["palette"])
    return out


def label_fields(fp: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """The plan's label and intensity `data` fields: the user's options, then the scan's.

    The scan's ignore value is written explicitly (`-1` for none), because a plan with
    `mask_values` does not infer one at training time.
    """
    out: dict[str, Any] = {"ignore_index": fp.get("ignore_index")}
    if out["ignore_index"] is None:
        out["ignore_index"] = -1
    if fp.get("class_names"):
        out["class_names"] = list(fp["class_names"])
    if fp.get("merge_rare"):
        out["merge_rare"] = True
    for key in ("normalization", "palette"):
        if options.get(key) is not None:
            out[key] = options[key]
    if out.get("normalization") == "dataset":
        from trainer.data.intensity import range_for

        out["intensity_range"] = range_for(fp["root"], fp["images"], fp["masks"])
    return out
