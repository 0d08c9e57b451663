"""benchmarks/step_peaks.py's summary of per-step tensor peaks."""

from benchmarks.step_peaks import summarize


def test_summary_gives_each_epoch_and_kind_its_spread_and_highest_step():
    rows = [
        {"epoch": 1, "kind": "train", "batch": b, "before": 10 + b, "peak": p}
        for b, p in enumerate([300, 340, 320])
    ] + [{"epoch": 1, "kind": "val", "batch": 0, "before": 5, "peak": 90}]
    assert summarize(rows) == [
        {
            "epoch": 1,
            "kind": "train",
            "batches": 3,
            "min": 300,
            "median": 320,
            "max": 340,
            "max_batch": 1,
            "in_use_before_max": 11,
        },
        {
            "epoch": 1,
            "kind": "val",
            "batches": 1,
            "min": 90,
            "median": 90,
            "max": 90,
            "max_batch": 0,
            "in_use_before_max": 5,
        },
    ]
