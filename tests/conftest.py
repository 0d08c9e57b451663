"""Fixtures shared by every test folder."""

import pytest

from tests import plans


@pytest.fixture
def minimal_plan():
    """The factory `tests.plans.minimal_plan`: `minimal_plan(data_path, data=..., **fields)`."""
    return plans.minimal_plan
