"""Fixtures of the planner tests."""

import pytest


@pytest.fixture
def second_size_needed(monkeypatch):
    """The leader's second size measured whenever the older rules ask for it: fake peaks
    whose slope is far from the analytic one would let the upper line
    (`measure_order.second_size_moot_above`, tested on its own in test_time_bound.py)
    skip the path a test is about."""
    from planner import measure_order

    monkeypatch.setattr(measure_order, "second_size_moot_above", lambda *a, **k: None)
