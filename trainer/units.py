"""Byte units and how fitplan writes them for people: one home for every module.

`gib(n)` -> `"1.23 GiB"` (reports, logs, errors); `fmt_bytes(n)` -> `"21.3 GiB"` or
`"512 MiB"` (the probe's table). Parsing human units from the command line lives in
`planner.app.units`, which uses the same constants.
"""

from __future__ import annotations

from typing import Any

MIB = 2**20
GIB = 2**30


def gib(n: Any, missing: str = "?", unit: bool = True) -> str:
    """`n` bytes as GiB with two decimals (`"1.23 GiB"`); `missing` when `n` is not a number."""
    if isinstance(n, bool) or not isinstance(n, (int, float)):
        return missing
    return f"{n / GIB:.2f} GiB" if unit else f"{n / GIB:.2f}"


def fmt_bytes(n: int | None) -> str:
    """`21.3 GiB` / `512 MiB`; `?` for unknown."""
    if n is None:
        return "?"
    return f"{n / GIB:.1f} GiB" if abs(n) >= GIB else f"{n / MIB:.0f} MiB"
