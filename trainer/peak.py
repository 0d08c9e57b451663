"""A run's expected memory peak as a function of the train steps it runs.

Why it depends on the steps (docs/runs.md, "Where a long run's rise comes from"): with
TensorFlow's BFC allocator the memory outside tensors stays flat over a run, and the pool's
resident part is the highest tensor peak of any step so far. One step's tensor peak differs
from the next by up to ~10% with every shape fixed, so a run's peak is the highest of its
steps' draws and rises with their number: the verification run sees a handful of steps, an
epoch of epfl-em about 30, twenty minutes about 500. The expected highest of N draws grows
with ln N where the draws have an exponential tail (the measured epoch maxima keep rising
after a Gaussian's would have flattened), so the expected rise over the verification run is

    tensor_bytes x per_e_fold x ln(min(N, max_steps) / verified_steps),   never below 0

where `tensor_bytes` is the verification run's highest tensor peak (on a GPU, where the
allocator's peak is all tensors, its peak), `verified_steps` the train steps it ran and
`per_e_fold` a measured constant (`planner.search.presets.GROWTH_PER_E_FOLD`, with the runs
it was fitted on). `max_steps` holds the curve flat past the longest runs measured.

The planner writes these figures into `prediction.growth` and the planned run's figure
into `prediction.peak_bytes`; the trainer uses the same function for the run it actually
trains (`--max-epochs 1`, a resume, a time limit), so `metrics.json` compares a run's peak
with the prediction for that run's length. This module imports nothing from the planner or
TensorFlow: both sides use it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def e_folds(verified_steps: int, max_steps: int, steps: int) -> float:
    """ln(min(steps, max_steps) / verified_steps), never below 0: how many e-folds of steps
    a run makes beyond the verification run's, the curve held flat past `max_steps`."""
    verified = max(1, int(verified_steps))
    n = min(max(int(steps), verified), max(verified, int(max_steps)))
    return math.log(n / verified)


def growth_bytes(growth: Mapping[str, Any], steps: int) -> int:
    """What a run of `steps` train steps (micro-batches) is expected to add to the
    verification run's peak, from `prediction.growth`'s figures."""
    folds = e_folds(growth["verified_steps"], growth["max_steps"], steps)
    return int(int(growth["tensor_bytes"]) * float(growth["per_e_fold"]) * folds)


def expected_peak_bytes(prediction: Mapping[str, Any] | None, steps: int | None) -> int | None:
    """The expected peak of a run of `steps` train steps under a plan's `prediction`.

    `prediction.growth` gives the curve (`base_bytes`: the verification run's peak plus
    what it did not hold, the in-RAM cache on a CPU). A plan without it (written before
    the curve, or by hand) has one figure, `peak_bytes`, whatever the length; so does a
    run whose length is unknown (`steps` None).
    """
    if not prediction:
        return None
    growth = prediction.get("growth")
    if not isinstance(growth, Mapping) or steps is None:
        peak = prediction.get("peak_bytes")
        return int(peak) if peak is not None else None
    return int(growth["base_bytes"]) + growth_bytes(growth, steps)


def planned_steps(
    epochs: int, steps_per_epoch: int, epoch_time_s: float | None, time_s: float | None
) -> int:
    """Train steps a run is expected to make: `epochs` of `steps_per_epoch`, fewer when a
    time limit `time_s` ends it first at `epoch_time_s` an epoch (rounded up: the epoch
    that the limit cuts short still runs steps)."""
    if time_s is not None and epoch_time_s and epoch_time_s > 0:
        epochs = min(epochs, max(1, math.ceil(time_s / epoch_time_s)))
    return max(0, int(epochs)) * max(0, int(steps_per_epoch))
