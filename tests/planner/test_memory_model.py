"""The memory line: fit, predict, largest fitting micro-batch, verify-and-step-down, scaling."""

from __future__ import annotations

import pytest

from planner.search.memory_model import (
    MemoryLine,
    allowed_bytes,
    fit_line,
    largest_fitting,
    scale_line,
    step_up,
    verify,
)
from planner.trials.trial import TrialResult

MIB = 2**20
GIB = 2**30


def test_fit_recovers_an_exact_line():
    line = fit_line([(1, 1000 + 100), (4, 1000 + 400), (8, 1000 + 800)])
    assert line.a == pytest.approx(1000)
    assert line.b == pytest.approx(100)
    assert line.residual == pytest.approx(0, abs=1e-6)
    assert line.predict(16) == pytest.approx(2600)
    assert line.warnings == ()


def test_fit_is_least_squares_with_repeated_sizes():
    line = fit_line([(1, 90), (1, 110), (4, 400)])
    # mean of the two size-1 points is 100: the line goes through (1, 100) and (4, 400)
    assert line.predict(1) == pytest.approx(100, abs=1e-6)
    assert line.b == pytest.approx(100, abs=1e-6)


def test_fit_refuses_a_single_size():
    with pytest.raises(ValueError, match="two distinct micro-batch sizes"):
        fit_line([(4, 100), (4, 120)])


def test_fit_warns_when_sizes_are_too_close():
    with pytest.warns(UserWarning, match="too close"):
        line = fit_line([(1, GIB), (2, GIB + 50 * MIB)])
    assert any("too close" in w for w in line.warnings)


def test_fit_warns_on_a_negative_slope():
    with pytest.warns(UserWarning, match="not positive"):
        fit_line([(1, 2 * GIB), (4, 2 * GIB - 10 * MIB)])


def test_largest_fitting_is_exact_at_the_boundary():
    line = MemoryLine(a=1000, b=100)
    # allowed = 3000 * 0.9 = 2700 -> (2700 - 1000) / 100 = 17 exactly
    assert allowed_bytes(3000, 0.1) == 2700
    assert largest_fitting(line, 3000, 0.1) == 17
    assert largest_fitting(line, 2999, 0.1) == 16
    assert largest_fitting(line, 3000, 0.0) == 20
    assert largest_fitting(line, 3000, 0.1, max_micro_batch=8) == 8


def test_largest_fitting_is_zero_when_nothing_fits():
    assert largest_fitting(MemoryLine(a=2000, b=100), 2000, 0.1) == 0


def test_largest_fitting_with_a_flat_line_uses_the_cap():
    assert largest_fitting(MemoryLine(a=1000, b=0), 3000, 0.1, max_micro_batch=32) == 32
    assert largest_fitting(MemoryLine(a=5000, b=-1), 3000, 0.1) == 0


def test_allowed_bytes_refuses_bad_headroom():
    with pytest.raises(ValueError, match="headroom_fraction"):
        allowed_bytes(1000, 1.0)


class FakeDevice:
    """Peak = a + b * mb for real; OOM above `ceiling`. Records every size it measured."""

    def __init__(self, a, b, ceiling=None):
        self.a, self.b, self.ceiling, self.calls = a, b, ceiling, []

    def __call__(self, mb: int) -> TrialResult:
        self.calls.append(mb)
        if self.ceiling is not None and mb > self.ceiling:
            return TrialResult("oom", mb, reason="fake OOM")
        return TrialResult("ok", mb, peak_bytes=self.a + self.b * mb, step_time_s=0.1)


def test_verify_accepts_a_correct_prediction_with_one_measurement():
    line = fit_line([(1, 1100), (4, 1400)])
    mb = largest_fitting(line, 3000, 0.1)
    device = FakeDevice(1000, 100)
    got, new_line, history = verify(line, mb, device, 3000, 0.1)
    assert got == 17 and device.calls == [17]
    assert [h.action for h in history] == ["accepted"]
    assert new_line.points[-1] == (17, 2700)


def test_verify_steps_down_when_the_device_uses_more_than_predicted():
    # The fit says b=100 but the device really uses b=110 (a line through noisy points).
    line = MemoryLine(a=1000, b=100, points=((1, 1100), (4, 1400)))
    device = FakeDevice(1000, 110)
    got, new_line, history = verify(line, 17, device, 3000, 0.1)
    # measured at 17: 1000 + 1870 = 2870 > 2700 -> step down; true largest is 15 (2650)
    assert history[0].action == "step down" and history[0].peak_bytes == 2870
    assert got == 15 and device.calls[-1] == 15
    assert history[-1].action == "accepted"
    assert 1000 + 110 * got <= 2700
    assert (17, 2870) in new_line.points


def test_verify_steps_down_on_oom():
    line = MemoryLine(a=1000, b=100, points=((1, 1100), (4, 1400)))
    device = FakeDevice(1000, 100, ceiling=12)
    got, _, history = verify(line, 17, device, 3000, 0.1, max_steps=3)
    # 17 OOMs -> floor(17 * 0.75) = 12, which fits
    assert device.calls == [17, 12]
    assert got == 12
    assert [h.status for h in history] == ["oom", "ok"]


def test_verify_gives_up_after_max_steps_and_on_errors():
    line = MemoryLine(a=1000, b=100, points=((1, 1100), (4, 1400)))
    got, _, history = verify(line, 17, FakeDevice(1000, 100, ceiling=2), 3000, 0.1, max_steps=2)
    assert got == 0 and len(history) == 2
    crash = lambda mb: TrialResult("error", mb, reason="crashed with SIGSEGV")  # noqa: E731
    got, _, history = verify(line, 17, crash, 3000, 0.1)
    assert got == 0 and history[-1].action == "gave up" and "SIGSEGV" in history[-1].reason


def test_verify_returns_zero_when_even_one_is_over_budget():
    line = MemoryLine(a=1000, b=100, points=((1, 1100), (4, 1400)))
    got, _, history = verify(line, 1, FakeDevice(2900, 100), 3000, 0.1)
    assert got == 0 and history[-1].action == "step down"


def test_verify_steps_down_a_size_whose_planned_run_would_pass_the_budget():
    """17 measures 2700 <= allowed 2700, but `over` says the planned run's expected peak
    (its rise with the train steps) passes the budget at 17 and 16: one down each time."""
    line = MemoryLine(a=1000, b=100, points=((1, 1100), (4, 1400)))
    device = FakeDevice(1000, 100)
    seen = []

    def over(mb, r):
        seen.append((mb, r.peak_bytes))
        return f"expected over the budget at {mb}" if mb > 15 else None

    got, _, history = verify(line, 17, device, 3000, 0.1, over=over)
    assert device.calls == [17, 16, 15] and got == 15
    assert [h.action for h in history] == ["step down", "step down", "accepted"]
    assert "expected over the budget at 17; next micro-batch 16" in history[0].reason
    assert seen == [(17, 2700), (16, 2600), (15, 2500)]
    # A size over the allowed bytes is not asked: the budget check says enough.
    seen.clear()
    verify(line, 17, FakeDevice(1000, 110), 3000, 0.1, over=over)
    assert (17, 2870) not in seen


def test_step_up_is_refused_when_the_planned_run_would_pass_the_budget():
    line = MemoryLine(a=1000, b=100, points=((1, 1100), (4, 1400)))
    mb, peak, step = step_up(
        line,
        4,
        1400,
        FakeDevice(1000, 100),
        3000,
        0.1,
        max_micro_batch=16,
        use_below=0.85,
        growth=0.1,
        over=lambda mb, r: "expected 3.1 GiB over the planned 1000 train steps > budget",
    )
    assert (mb, peak) == (4, 1400) and step.action == "step up refused"
    assert "1000 train steps > budget; keeping 4" in step.reason


def test_scale_line_scales_only_the_per_sample_part():
    line = MemoryLine(a=GIB, b=100 * MIB, points=((1, 1), (4, 4)))
    big = scale_line(line, (256, 256), (512, 512))
    assert big.a == GIB and big.b == 400 * MIB
    assert big.points == () and "pixel ratio 4" in big.source
    assert "pruning only" in big.warnings[0]


def test_step_up_measures_the_size_the_verified_point_allows():
    # Verified 4 at 1400 of 3000 (+10% growth = 51%); slope 100 through (4, 1400):
    # allowed 2700 -> (2700 - 1000) / 100 = 17, capped at 16.
    line = MemoryLine(a=1000, b=100, points=((1, 1100), (4, 1400)))
    device = FakeDevice(1000, 100)
    mb, peak, step = step_up(
        line, 4, 1400, device, 3000, 0.1, max_micro_batch=16, use_below=0.85, growth=0.1
    )
    assert device.calls == [16]
    assert (mb, peak) == (16, 2600) and step.action == "accepted"


def test_step_up_keeps_the_verified_size_when_the_larger_one_is_over():
    line = MemoryLine(a=1000, b=100, points=((1, 1100), (4, 1400)))
    device = FakeDevice(1000, 200)  # the real slope is twice the line's: 16 -> 4200
    mb, peak, step = step_up(
        line, 4, 1400, device, 3000, 0.1, max_micro_batch=16, use_below=0.85, growth=0.1
    )
    assert (mb, peak) == (4, 1400)
    assert step.action == "step up refused" and "keeping 4" in step.reason
    oom = FakeDevice(1000, 100, ceiling=8)
    mb, _, step = step_up(
        line, 4, 1400, oom, 3000, 0.1, max_micro_batch=16, use_below=0.85, growth=0.1
    )
    assert mb == 4 and step.status == "oom"


def test_step_up_measures_nothing_when_the_budget_is_used_or_the_cap_reached():
    line = MemoryLine(a=1000, b=100, points=((1, 1100), (4, 1400)))
    device = FakeDevice(1000, 100)
    # 2400 x 1.1 = 2640 = 88% of 3000: used enough.
    assert step_up(
        line, 14, 2400, device, 3000, 0.1, max_micro_batch=64, use_below=0.85, growth=0.1
    ) == (14, 2400, None)
    # At the cap (the effective batch): nothing larger is useful.
    assert step_up(
        line, 4, 1400, device, 3000, 0.1, max_micro_batch=4, use_below=0.85, growth=0.1
    ) == (4, 1400, None)
    assert device.calls == []
