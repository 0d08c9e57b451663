"""`import fitplan`: the Python facade for notebooks (README, "From Python")."""

from __future__ import annotations

import pytest

import fitplan
from tests.plans import minimal_plan


def test_plan_takes_the_command_lines_units_and_prints_progress(monkeypatch, capsys):
    import planner.make_plan

    seen = {}

    def fake_make_plan(data, **kwargs):
        seen.update(kwargs, data=data)
        kwargs["log"]("probing")

        class Result:
            plan = minimal_plan(data)

        return Result()

    monkeypatch.setattr(planner.make_plan, "make_plan", fake_make_plan)
    plan = fitplan.plan("d", budget_memory="4GiB", budget_time="20m", backbones=["unet_small"])
    assert isinstance(plan, fitplan.Plan)
    assert seen["budget_memory"] == 4 * 2**30 and seen["budget_time_s"] == 1200.0
    assert seen["backbones"] == ["unet_small"]
    assert "probing" in capsys.readouterr().out
    with pytest.raises(fitplan.FitplanError, match="budget_memory"):
        fitplan.plan("d", budget_memory="lots")


@pytest.mark.slow
def test_train_shows_progress_and_resume_extends_the_run(tmp_path, capsys):
    from planner.app.demo import make_demo_dataset

    data = make_demo_dataset(tmp_path / "data", n=6, size=(48, 48), seed=3)
    plan = minimal_plan(data, data={"val_fraction": 0.34}, epochs=5)
    result = fitplan.train(plan, tmp_path / "run", max_epochs=1, max_steps=2)
    out = capsys.readouterr().out
    assert "epoch 1/1" in out and "img/s" in out and "ETA" in out
    assert result.metrics["epochs"] == 1
    more = fitplan.resume(tmp_path / "run", max_epochs=2, progress=False)
    assert more.metrics["epochs"] == 2
    assert "epoch 2/2" not in capsys.readouterr().out  # progress=False: quiet
    assert fitplan.load_plan(tmp_path / "run" / "plan.json").epochs == 2
    assert "epoch 2/2" in (tmp_path / "run" / "train.log").read_text()


def test_python_versions_agree_across_pyproject_ci_and_docs():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    pyproject = (root / "pyproject.toml").read_text()
    versions = ["3.10", "3.11", "3.12", "3.13"]
    assert 'requires-python = ">=3.10,<3.14"' in pyproject
    classified = re.findall(r'"Programming Language :: Python :: (3\.\d+)"', pyproject)
    assert classified == versions
    ci = (root / ".github" / "workflows" / "ci.yml").read_text()
    assert 'python-version: ["3.10", "3.11", "3.12", "3.13"]' in ci
    assert "3.10, 3.11, 3.12 or 3.13" in (root / "docs" / "install.md").read_text()
    for package, bound in (("keras", "<4"), ("typer", "<1")):
        assert re.search(rf'"{package}>=[\d.]+,{bound}"', pyproject), package
