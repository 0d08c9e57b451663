"""Bad plans, and plans made for other data or a larger machine (docs/reliability.md, Plans).

A bad plan is refused before anything is read or written: exit code 4, one line
naming the file and the field with the value received, no run folder. A plan made
for another dataset or a larger memory budget trains, with a warning that gives
both values.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.faults.common import cli, plan_dict, write_plan
from tests.planner.messy_data import binary_mask, png_bytes, rgb
from trainer.errors import PlanError
from trainer.plan import Plan, load_plan, save_plan


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("plans") / "data"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(3):
        (root / "images" / f"p{i}.png").write_bytes(png_bytes(rgb(i)))
        (root / "masks" / f"p{i}.png").write_bytes(png_bytes(binary_mask(i)))
    return root


def _with(path: str, value):
    """A change to one (dotted) field of the tiny plan."""

    def change(raw: dict) -> dict:
        *parents, leaf = path.split(".")
        node = raw
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
        return raw

    return change


BAD_PLANS = [
    ("not json", lambda raw: '{"version": 1, "backbone": ', "not valid JSON (line 1"),
    ("empty file", lambda raw: "", "not valid JSON"),
    ("a list", lambda raw: "[1, 2]", "a plan must be a JSON object"),
    ("no version", lambda raw: {k: v for k, v in raw.items() if k != "version"}, "`version`"),
    ("version 2", _with("version", 2), "`version` must be 1. Received: version=2"),
    ("backbone", _with("backbone", "vgg99"), "Received: backbone='vgg99'"),
    ("input_size", _with("input_size", [100, 100]), "Received: input_size=(100, 100)"),
    ("micro_batch 0", _with("micro_batch", 0), "Received: micro_batch=0"),
    ("accumulation", _with("accumulation_steps", -1), "Received: accumulation_steps=-1"),
    ("negative lr", _with("optimizer.learning_rate", -0.1), "optimizer.learning_rate=-0.1"),
    (
        "NaN lr",
        lambda raw: json.dumps(_with("optimizer.learning_rate", float("nan"))(raw)),
        "plan field `optimizer.learning_rate` must be a finite number. Received: "
        "optimizer.learning_rate=NaN",
    ),
    (
        "Infinity",
        lambda raw: json.dumps(_with("epochs", float("inf"))(raw)),
        "Received: epochs=Infinity",
    ),
    ("unknown key", _with("micro_bacth", 4), "`micro_bacth` is not a known field"),
    ("unknown nested", _with("optimizer.lr", 0.1), "`optimizer.lr` is not a known field"),
    ("notes key", _with("notes", {"who": "me"}), "`notes` is not a known field"),
    ("nested x- key", _with("data.x-who", "me"), "`data.x-who` is not a known field"),
]


@pytest.mark.parametrize(
    ("make", "words"), [c[1:] for c in BAD_PLANS], ids=[c[0] for c in BAD_PLANS]
)
def test_a_bad_plan_exits_4_naming_file_and_field_and_writes_nothing(data, tmp_path, make, words):
    plan = write_plan(tmp_path / "my plan.json", make(plan_dict(data)))
    run = tmp_path / "run"
    result = cli("train", "--plan", plan, "--out", run)
    assert result.exit_code == 4, result.output
    line = " ".join(result.stderr.split())  # rich may wrap a long line
    assert f"{plan}:" in line and words in line, line
    assert not run.exists()


def test_a_missing_plan_exits_4(tmp_path):
    result = cli("train", "--plan", tmp_path / "nope.json", "--out", tmp_path / "run")
    assert result.exit_code == 4 and "plan file not found" in result.stderr


def test_resume_of_a_run_whose_plan_json_was_broken_exits_4(data, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    write_plan(run / "plan.json", _with("micro_batch", 0)(plan_dict(data)))
    result = cli("train", "--resume", run)
    assert result.exit_code == 4 and "Received: micro_batch=0" in result.stderr


def test_resume_of_a_folder_without_a_run_exits_4_naming_the_missing_plan(tmp_path):
    result = cli("train", "--resume", tmp_path)
    assert result.exit_code == 4, result.output
    assert f"{tmp_path / 'plan.json'}: plan file not found" in result.stderr


def test_unknown_keys_are_refused_everywhere_except_top_level_notes(tmp_path, data):
    raw = plan_dict(data)
    raw["x-made-by"] = {"who": "me"}
    raw["_comment"] = "hand-edited"
    path = write_plan(tmp_path / "plan.json", raw)
    plan = load_plan(path)
    assert plan.notes == {"x-made-by": {"who": "me"}, "_comment": "hand-edited"}
    save_plan(plan, tmp_path / "again.json")  # kept through a round trip
    assert json.loads((tmp_path / "again.json").read_text())["x-made-by"] == {"who": "me"}
    with pytest.raises(PlanError, match=r"did you mean `micro_batch`\?"):
        Plan.from_dict({**plan_dict(data), "micro_bacth": 2})


# -- plans made elsewhere ------------------------------------------------------------------


def test_the_trainer_digest_is_the_scan_digest(tmp_path):
    """One rule: a plan made from a scan matches the data it was made from."""
    from planner.scan.dataset import scan
    from tests.planner.messy_data import build_messy_dataset
    from trainer.data.digest import dataset_digest

    root = tmp_path / "messy"
    build_messy_dataset(root)  # pipes, loops, broken links, unpaired files: all in the digest
    assert dataset_digest(root) == scan(root)["digest"]
    assert dataset_digest(str(root)) == dataset_digest(root)


def test_a_plan_for_other_data_warns_with_both_digests(data, tmp_path):
    import shutil

    from planner.scan.dataset import scan
    from trainer.train.preflight import fingerprint_warning

    copy = tmp_path / "copy"
    shutil.copytree(data, copy)
    digest = scan(data)["digest"]
    same = Plan.from_dict(plan_dict(copy, data={"path": str(copy), "fingerprint": digest}))
    assert fingerprint_warning(same) is None  # a copy elsewhere is the same data
    (copy / "images" / "p0.png").write_bytes(png_bytes(rgb(7)))
    message = fingerprint_warning(same)
    assert message is not None and f"plan.data.fingerprint={digest}" in message
    assert scan(copy)["digest"] in message and str(copy) in message


def test_a_plan_for_more_memory_than_this_machine_has_warns_with_both_numbers(data):
    from trainer.train.preflight import budget_warning, plan_warnings

    raw = plan_dict(data)
    raw["target"] = {"device": "cpu", "budget_bytes": 64 * 2**30}
    plan = Plan.from_dict(raw)
    message = budget_warning(plan, available=8 * 2**30)
    assert (
        f"{64 * 2**30} bytes (64.00 GiB)" in message and f"{8 * 2**30} bytes (8.00 GiB)" in message
    )
    assert budget_warning(plan, available=128 * 2**30) is None
    assert budget_warning(Plan.from_dict(plan_dict(data)), available=1) is None  # no budget
    raw["target"]["budget_bytes"] = 2**60  # no machine has an exbibyte: psutil's figure
    assert any("memory budget" in m for m in plan_warnings(Plan.from_dict(raw)))
