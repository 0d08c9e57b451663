"""The peers' searches (benchmarks/peers_search.py) against a fake measure: no TF, no children.

The fake: peak = A + B x micro-batch (MiB), out of memory above a ceiling. Each expected
choice is worked through by hand from the upstream algorithm (comments), so a search that
drifts from its source fails here.
"""

from __future__ import annotations

import pytest

from benchmarks import peers_search as ps
from benchmarks.peers import (
    TrialMemo,
    fitplan_ooms,
    judge_rows,
    parse_candidates,
    parse_strategies,
    rejudge_rows,
)
from benchmarks.peers_report import render_markdown
from benchmarks.peers_train import judge, train_length_args, training_plan
from trainer.errors import FitplanError
from trainer.plan import Plan, save_plan

MIB = 2**20
A, B = 1000, 100  # MiB, MiB per sample
BUDGET = 3100 * MIB  # fits up to micro-batch 21 (1000 + 100 x 21 = 3100)


def fake(a=A, b=B, ceiling=BUDGET, error_at=None):
    calls: list[int] = []

    def measure(mb: int) -> ps.Probe:
        calls.append(mb)
        if error_at is not None and mb == error_at:
            return ps.Probe(mb, "error", None, 1.0)
        peak = (a + b * mb) * MIB
        return ps.Probe(mb, "oom" if peak > ceiling else "ok", peak, 1.0)

    measure.calls = calls
    return measure


def tried(r: ps.SearchResult) -> list[int]:
    return [p.micro_batch for p in r.probes]


def test_lightning_power_doubles_then_halves_once():
    # 2, 4, 8, 16 fit; 32 (4200 MiB) does not: halve to 16 and stop.
    r = ps.lightning_power(fake())
    assert (r.micro_batch, tried(r), r.trials, r.ooms) == (16, [2, 4, 8, 16, 32], 5, 1)
    assert r.planning_s == 5.0


def test_lightning_power_when_the_first_size_fails():
    # ceiling 1150: only 1 fits. 2 OOM -> 1 (no success yet, go on); 1 ok -> 2; 2 OOM -> 1, stop.
    r = ps.lightning_power(fake(ceiling=1150 * MIB))
    assert (r.micro_batch, tried(r), r.ooms) == (1, [2, 1, 2], 2)


def test_lightning_binsearch_bisects_then_takes_the_margin():
    # 2..16 ok, 32 OOM: high 32, mid 24 OOM: high 24, mid 20 ok: low 20, mid 22 OOM:
    # high 22, mid 21 ok: low 21, high - low = 1, stop at 21; margin 5%: int(19.95) = 19.
    r = ps.lightning_binsearch(fake())
    assert tried(r) == [2, 4, 8, 16, 32, 24, 20, 22, 21]
    assert (r.micro_batch, r.trials, r.ooms) == (19, 9, 3)
    assert "21 -> 19" in r.note


def test_lightning_binsearch_returns_one_untried_when_two_fails():
    # 2 OOM: high 2, mid (2 + 1) // 2 = 1, high - low = 1: stop with 1, never tried.
    r = ps.lightning_binsearch(fake(ceiling=1150 * MIB))
    assert (r.micro_batch, tried(r), r.ooms) == (1, [2], 1)


def test_lightning_stops_on_an_error_that_is_not_oom():
    r = ps.lightning_power(fake(error_at=8))
    assert r.micro_batch is None and "error" in r.error and tried(r) == [2, 4, 8]


def test_accelerate_halves_from_64():
    # 64 (7400) OOM, 32 (4200) OOM, 16 ok.
    r = ps.accelerate(fake())
    assert (r.micro_batch, tried(r), r.trials, r.ooms) == (16, [64, 32, 16], 3, 2)


def test_accelerate_0_9_multiplies_by_0_9():
    # int(x * 0.9) from 64: 57, 51, 45, 40, 36, 32, 28, 25, 22 all over 21; 19 fits.
    r = ps.STRATEGIES["accelerate_0.9"].run(fake(), BUDGET)
    assert tried(r) == [64, 57, 51, 45, 40, 36, 32, 28, 25, 22, 19]
    assert (r.micro_batch, r.ooms) == (19, 10)


def test_accelerate_fails_at_zero():
    r = ps.accelerate(fake(ceiling=500 * MIB))
    assert r.micro_batch is None and "reached zero" in r.error
    assert tried(r) == [64, 32, 16, 8, 4, 2, 1]


def test_ultralytics_solves_the_line_for_60_percent():
    # line through 1..16 is exactly 1000 + 100 x; 0.6 x 3100 = 1860 -> int(8.6) = 8.
    r = ps.ultralytics(fake(), budget_bytes=BUDGET)
    assert (r.micro_batch, tried(r), r.ooms) == (8, [1, 2, 4, 8, 16], 0)


def test_ultralytics_loglog_today():
    # ln(peak) on ln(mb) through 1..16: slope 0.30670, intercept 6.91406;
    # exp((ln 1860 - 6.91406) / 0.30670) = 7.41 -> round -> 7.
    r = ps.STRATEGIES["ultralytics_loglog"].run(fake(), BUDGET)
    assert r.micro_batch == 7 and r.trials == 5


def test_ultralytics_clamps_below_the_first_failure():
    # ceiling 1700: 8 and 16 fail; the line (1000 + 100 x) solved at 0.6 x 10000 MiB gives
    # 50 >= 8, the first failed size: take the prior safe point, 4.
    r = ps.ultralytics(fake(ceiling=1700 * MIB), budget_bytes=10000 * MIB)
    assert (r.micro_batch, r.ooms) == (4, 2) and "prior safe point" in r.note


def test_ultralytics_falls_back_to_16_outside_the_safe_range():
    # slope 0.01 MiB per sample: (1860 - 1000) / 0.01 = 86000 > 1024 -> default 16.
    r = ps.ultralytics(fake(b=0.01), budget_bytes=BUDGET)
    assert r.micro_batch == 16 and "outside safe range" in r.note


def test_ultralytics_falls_back_to_16_when_nothing_runs():
    r = ps.ultralytics(fake(ceiling=500 * MIB), budget_bytes=BUDGET)
    assert (r.micro_batch, r.ooms) == (16, 5) and "error detected" in r.note


def test_opennmt_binary_search_then_0_8():
    # [1, 512]: 256, 128, 64, 32 fail (top -> 255, 127, 63, 31); 16 ok (bottom 16);
    # 31 - 16 = 15 <= 16 stops; int(0.8 x 16) = 12.
    r = ps.opennmt(fake())
    assert (r.micro_batch, tried(r), r.trials, r.ooms) == (12, [256, 128, 64, 32, 16], 5, 4)


def test_opennmt_fails_when_nothing_above_the_bottom_fits():
    # 256, 128, 64, 32, 16 fail: top 15, 15 - 1 <= 16 stops with the bottom still 1.
    r = ps.opennmt(fake(ceiling=2000 * MIB))
    assert r.micro_batch is None and "autotuning failed" in r.error and r.ooms == 5


def test_default_strategies_are_the_issues_list():
    names = "lightning_power lightning_binsearch accelerate ultralytics opennmt fitplan"
    assert " ".join(ps.DEFAULT_STRATEGIES) == names
    assert ps.STRATEGIES["lightning_power"].steps == (1, 2)  # steps_per_trial = 3
    assert ps.STRATEGIES["opennmt"].steps == (1, 4)  # sample_iterations = 5


class _Result:
    def __init__(self, status, peak):
        self.status, self.peak_bytes = status, peak


def test_trial_memo_starts_one_child_per_spec_size_and_limit():
    calls = []

    def measure_one(spec, mb, *, timeout_s, memory_limit_bytes):
        calls.append((spec.warmup_steps, spec.measured_steps, mb, memory_limit_bytes))
        peak = (A + B * mb) * MIB
        return _Result("oom" if peak > memory_limit_bytes else "ok", peak)

    memo = TrialMemo(measure_one, 60.0, log=lambda s: None)
    cand = parse_candidates("mobilenet_v3_small:128")[0]
    m = memo.measure(cand, (1, 2), 2, BUDGET)
    first, again = m(4), m(4)
    memo.measure(cand, (1, 4), 2, BUDGET)(4)  # other steps: a new child
    bigger = memo.measure(cand, (1, 2), 2, 2 * BUDGET)
    assert bigger(4).reused  # ok at 3100 MiB with a 1400 MiB peak: ok under 6200 too
    assert m(32).status == "oom" and bigger(32).status == "ok"  # an OOM is not reused
    smaller = memo.measure(cand, (1, 2), 2, 1200 * MIB)
    assert smaller(4).status == "oom"  # 1400 MiB is over 1200: measured again
    assert calls == [
        (1, 2, 4, BUDGET),
        (1, 4, 4, BUDGET),
        (1, 2, 32, BUDGET),
        (1, 2, 32, 2 * BUDGET),
        (1, 2, 4, 1200 * MIB),
    ]
    assert (memo.children, memo.reused) == (5, 2)
    assert again.reused and not first.reused and again.wall_s == first.wall_s


def test_fitplan_ooms_counts_trials_and_verification():
    ev = {
        "trials": [{"results": [{"status": "ok"}, {"status": "oom"}]}],
        "verification": [{"status": "oom"}, {"status": "ok"}],
    }
    assert fitplan_ooms(ev) == 2 and fitplan_ooms(None) == 0


def _plan(**kw):
    raw = {
        "version": 1,
        "backbone": "mobilenet_v3_small",
        "input_size": [128, 128],
        "micro_batch": 16,
        "data": {"path": "/tmp/x", "classes": 2},
        "target": {"device": "cpu", "budget_bytes": BUDGET},
        "prediction": {"peak_bytes": 1},
        **kw,
    }
    return Plan.from_dict(raw)


def test_training_plan_accumulates_to_16_and_drops_the_guard():
    p = training_plan(_plan(), 6)
    assert (p.micro_batch, p.accumulation_steps) == (6, 3)  # ceil(16 / 6)
    assert p.target.budget_bytes is None and p.prediction is None
    assert training_plan(_plan(), 19).accumulation_steps == 1


def test_judge_marks_over_budget_and_watchdog_kills():
    assert judge({"peak_bytes": 2 * BUDGET}, BUDGET)["over"] is True
    ok = judge({"peak_bytes": BUDGET // 2}, BUDGET)
    assert ok["over"] is False and ok["share"] == 0.5
    assert judge({"peak_bytes": None, "killed": "RSS 9 GiB over"}, BUDGET)["over"] is True


def test_bad_options_are_one_line_errors():
    with pytest.raises(FitplanError, match="backbone:side"):
        parse_candidates("mobilenet_v3_small")
    with pytest.raises(FitplanError, match="--strategies"):
        parse_strategies("lightning,fitplan")


def test_markdown_table_has_one_row_per_result():
    doc = {
        "date": "2026-12-03",
        "machine": {"cpu": "x", "cores": 2, "isa": "avx2", "cpu_flags": ["avx2"]},
        "data": "d",
        "masks": "m",
        "effective_batch": 16,
        "load_average_start": 1.0,
        "load_average_end": 2.0,
        "wall_s": 10,
        "memo": {"note": "memoized", "trial_children": 3, "trial_reuses": 1},
        "rows": [
            {
                "strategy": "accelerate",
                "candidate": "c",
                "budget_bytes": BUDGET,
                "micro_batch": 8,
                "accumulation_steps": 2,
                "planning_s": 12.0,
                "trials": 3,
                "ooms": 2,
                "training": {"peak_bytes": 2 * BUDGET, "share": 2.0, "over": True, "why": ""},
            }
        ],
    }
    md = render_markdown(doc)
    assert "| accelerate | c | 3.03 GiB | 8 x 2 | 12 | 3 | 2 | 6.05 GiB | 200% | **over** |" in md


def test_a_long_run_is_a_time_limit_not_one_epoch():
    assert train_length_args(None) == ["--max-epochs", "1"]
    assert train_length_args(25) == ["--set", "time_limit_s=1500"]
    assert train_length_args(0.5) == ["--set", "time_limit_s=30"]


class _FakeTrainings:
    """`TrainingMemo.run` without a child: the peak grows with the micro-batch."""

    def __init__(self):
        self.plans = []

    def run(self, plan):
        self.plans.append(plan)
        peaks = [(1000 + 100 * plan.micro_batch) * MIB, (1100 + 100 * plan.micro_batch) * MIB]
        return {
            "run": f"r{plan.micro_batch}",
            "peak_bytes": max(peaks),
            "epochs": 2,
            "epoch_peaks_bytes": peaks,
        }


def _peers_json(tmp_path, rows):
    path = tmp_path / "peers.json"
    path.write_text(__import__("json").dumps({"rows": rows}))
    return path


def test_rejudge_trains_an_earlier_tables_choices_with_fitplans_plans(tmp_path):
    save_plan(_plan(), tmp_path / "fp.json")
    old = {"peak_bytes": 1, "share": 0.1, "over": False, "why": ""}
    rows = [
        {
            "strategy": "fitplan",
            "candidate": "c",
            "budget_bytes": BUDGET,
            "micro_batch": 16,
            "plan_file": str(tmp_path / "fp.json"),
            "training": old,
        },
        {
            "strategy": "accelerate",
            "candidate": "c",
            "budget_bytes": BUDGET,
            "micro_batch": 21,
            "training": old,
        },
        {
            "strategy": "accelerate",
            "candidate": "c",
            "budget_bytes": 2 * BUDGET,
            "micro_batch": 8,
            "training": old,
        },
        {"strategy": "opennmt", "candidate": "c", "budget_bytes": BUDGET, "micro_batch": None},
    ]
    new_rows, bases = rejudge_rows(_peers_json(tmp_path, rows))
    assert list(bases) == [("c", BUDGET)]
    assert all("training" not in r for r in new_rows)  # the old one-epoch verdicts go
    fake = _FakeTrainings()
    judge_rows(new_rows, bases, fake)
    # every choice trains from fitplan's plan (the other budget's too), at its own micro-batch
    assert [(p.micro_batch, p.accumulation_steps) for p in fake.plans] == [(16, 1), (21, 1), (8, 2)]
    t = [r["training"] for r in new_rows]
    assert t[0]["over"] is False and t[0]["epochs"] == 2  # 2700 MiB of 3100
    assert t[1]["over"] is True and t[1]["peak_bytes"] == 3200 * MIB  # the second epoch passed it
    assert t[2]["over"] is False and t[3] is None


def test_rejudge_of_a_bad_file_names_it(tmp_path):
    bad = tmp_path / "peers.json"
    bad.write_text("{")
    with pytest.raises(FitplanError, match="peers.json: not a peers.json"):
        rejudge_rows(bad)
    no_plan = _peers_json(tmp_path, [{"strategy": "accelerate", "candidate": "c"}])
    with pytest.raises(FitplanError, match="no fitplan row"):
        rejudge_rows(no_plan)


def test_markdown_says_how_long_each_choice_trained():
    doc = {
        "date": "d",
        "machine": {},
        "data": "d",
        "masks": "m",
        "effective_batch": 16,
        "load_average_start": 1.0,
        "load_average_end": 1.0,
        "wall_s": 1,
        "memo": {},
        "train_minutes": 25,
        "rejudged": "old/peers.json",
        "rows": [
            {
                "strategy": "fitplan",
                "candidate": "c",
                "budget_bytes": BUDGET,
                "micro_batch": 2,
                "accumulation_steps": 8,
                "training": {
                    "peak_bytes": BUDGET // 2,
                    "share": 0.5,
                    "over": False,
                    "why": "",
                    "epochs": 7,
                },
            }
        ],
    }
    md = render_markdown(doc)
    assert "| 1.51 GiB (7 epochs) | 50% | no |" in md
    assert "a 25-minute `fitplan train`" in md and "those of old/peers.json" in md
