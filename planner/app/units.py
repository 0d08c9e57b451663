"""Parse the human units of command-line options: `4GiB`, `512MB`, `20m`, `1h30m`, `256,384`."""

from __future__ import annotations

import re

from trainer.errors import FitplanError

_BYTES = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600}


def parse_bytes(text: str, option: str = "--budget-memory") -> int:
    """`"4GiB"` -> 4294967296; `"500MB"` -> 500000000; a bare number is bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text or "")
    unit = m.group(2).lower() if m else None
    if not m or unit not in _BYTES:
        raise FitplanError(
            f"`{option}` must be a size such as 4GiB, 512MiB or 6GB. Received: {option}={text!r}"
        )
    value = int(float(m.group(1)) * _BYTES[unit])
    if value <= 0:
        raise FitplanError(f"`{option}` must be positive. Received: {option}={text!r}")
    return value


def parse_duration(text: str, option: str = "--budget-time") -> float:
    """`"20m"` -> 1200.0; `"1h30m"` -> 5400.0; `"90s"` or a bare number -> seconds."""
    s = (text or "").strip().lower()
    if re.fullmatch(r"[0-9]*\.?[0-9]+", s):
        total = float(s)
    else:
        parts = re.findall(r"([0-9]*\.?[0-9]+)\s*([a-z]+)", s)
        if (
            not parts
            or "".join(n + u for n, u in parts) != s.replace(" ", "")
            or any(u not in _SECONDS for _, u in parts)
        ):
            raise FitplanError(
                f"`{option}` must be a duration such as 20m, 1h30m or 90s. Received: {option}={text!r}"
            )
        total = sum(float(n) * _SECONDS[u] for n, u in parts)
    if total <= 0:
        raise FitplanError(f"`{option}` must be positive. Received: {option}={text!r}")
    return total


def parse_list(text: str | None, option: str) -> list[str] | None:
    """`"a,b"` -> `["a", "b"]`; `None` stays `None`."""
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise FitplanError(
            f"`{option}` must be a comma-separated list. Received: {option}={text!r}"
        )
    return items


def parse_int_list(text: str | None, option: str) -> list[int] | None:
    """`"256,384"` -> `[256, 384]`."""
    items = parse_list(text, option)
    if items is None:
        return None
    try:
        return [int(t) for t in items]
    except ValueError:
        raise FitplanError(
            f"`{option}` must be comma-separated integers. Received: {option}={text!r}"
        ) from None
