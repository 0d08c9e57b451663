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
