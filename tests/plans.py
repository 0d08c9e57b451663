"""The one factory for the small plans that tests train or inspect."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainer.plan import Plan


def plan_dict(
    data_path: str | Path = "data", *, data: dict[str, Any] | None = None, **overrides: Any
) -> dict[str, Any]:
    """The smallest valid plan as parsed JSON: unet_small at 32x32, micro-batch 2.

    Args:
        data_path: the dataset root, `data.path`.
        data: further `data` fields (`val_fraction`, `mask_values`, ...).
        **overrides: top-level fields; each replaces the default's value whole.
    """
    raw: dict[str, Any] = {
        "version": 1,
        "backbone": "unet_small",
        "input_size": [32, 32],
        "micro_batch": 2,
        "data": {"path": str(data_path), **(data or {})},
    }
    raw.update(overrides)
    return raw


def minimal_plan(
    data_path: str | Path = "data", *, data: dict[str, Any] | None = None, **overrides: Any
) -> Plan:
    """`plan_dict` validated as a `Plan`."""
    return Plan.from_dict(plan_dict(data_path, data=data, **overrides))
