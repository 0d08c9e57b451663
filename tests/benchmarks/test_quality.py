"""`benchmarks/quality.py`'s summary."""

from benchmarks.quality import winner


def test_one_arm_has_no_winner():
    assert winner({"baseline": {"dice": 0.0}}) is None


def test_the_higher_dice_wins():
    assert winner({"baseline": {"dice": 0.0}, "fitplan": {"dice": 0.82}}) == "fitplan"
    assert winner({"baseline": {"dice": 0.9}, "fitplan": {"dice": 0.82}}) == "baseline"
