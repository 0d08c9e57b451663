"""Fixtures shared by every test folder."""

import pytest

from tests import plans


@pytest.fixture
def minimal_plan():
    """The factory `tests.plans.minimal_plan`: `minimal_plan(data_path, data=..., **fields)`."""
    return plans.minimal_plan


@pytest.fixture(autouse=True)
def _private_measurement_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own empty measurement cache (planner.trials.cache): fake trial
    results must never reach the user's cache, and no test reuses another's results."""
    monkeypatch.setenv("FITPLAN_CACHE_DIR", str(tmp_path_factory.mktemp("fitplan-cache")))


@pytest.fixture(autouse=True)
def _no_early_spare(monkeypatch):
    """No trial child started as planning begins (planner.trials.spare.START_EARLY): most
    tests plan with fake children, and a real spare would import TensorFlow beside them
    for nothing. tests/planner/test_spare.py switches it on where it tests it."""
    from planner.trials import spare

    monkeypatch.setattr(spare, "START_EARLY", False)
