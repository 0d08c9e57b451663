"""One tiny trained run folder, made once per test session and shared by the tests that use it.

Evaluate, predict, export and report only read a run folder (export adds `export/` to
it), so they need not each build and fit their own model: on a slow 2-core CPU every
model build and fit costs tens of seconds. Import the fixture into a test module:

    from tests.trained_run import trained_run_fixture  # noqa: F401  (the `trained_run` fixture)

The run is `tests.trainer.run_factory.make_run` with `FIT_STEPS` of fitting (an untrained
net predicts about 0.5 everywhere, which would make quantization and mask checks say
nothing), on `N` demo pairs of `SIZE`, not square, so a swapped height and width shows.
A test that changes the run must copy it first.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

N = 4
SIZE = (48, 80)
FIT_STEPS = 40


class TrainedRun(NamedTuple):
    """The run folder, its data, and the saved model's output `y` on crops `x` of the data."""

    path: Path
    data: Path
    x: np.ndarray
    y: np.ndarray


_made: dict[str, TrainedRun] = {}


@pytest.fixture(scope="session", name="trained_run")
def trained_run_fixture(tmp_path_factory) -> TrainedRun:
    # Imported into several modules, pytest keeps one fixture definition (and one session
    # cache) per module: the dictionary makes the run once for the whole session.
    if "run" not in _made:
        from planner.app.demo import make_demo_dataset
        from tests.trainer.run_factory import make_plan, make_run

        root = tmp_path_factory.mktemp("trained-run")
        data = make_demo_dataset(root / "data", n=N, size=SIZE)
        run = make_run(root / "run", make_plan(data), fit_steps=FIT_STEPS)
        _made["run"] = TrainedRun(run.path, data, run.x, run.y)
    return _made["run"]
