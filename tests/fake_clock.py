"""A settable clock for callbacks that take `clock=` (schedule, time account)."""

from __future__ import annotations


class FakeClock:
    """Returns `t`; tests move it by hand."""

    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t
