"""The console script's exit (`planner.app.cli.main`): no TensorFlow teardown, nothing lost."""

from __future__ import annotations

import json
import os
import sys

import pytest

from planner.app import cli


class Exited(Exception):
    def __init__(self, code):
        super().__init__(code)
        self.code = code


@pytest.fixture
def fake_exit(monkeypatch):
    def _exit(code):
        raise Exited(code)

    monkeypatch.setattr(os, "_exit", _exit)
    # The real one would close this process's log handlers: os._exit is faked here.
    monkeypatch.setattr(cli.logging, "shutdown", lambda: None)


def test_without_tensorflow_it_exits_as_usual(monkeypatch, fake_exit):
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0


def test_with_tensorflow_loaded_it_leaves_with_the_commands_exit_code(
    monkeypatch, fake_exit, tmp_path, capsys
):
    monkeypatch.setitem(sys.modules, "tensorflow", sys.modules.get("tensorflow", object()))
    with pytest.raises(Exited) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0 and "Usage" in capsys.readouterr().out
    with pytest.raises(Exited) as exc:
        cli.main(["scan", str(tmp_path / "missing")])
    assert exc.value.code not in (0, None)
    assert "missing" in capsys.readouterr().err


@pytest.mark.slow
def test_a_training_command_writes_everything_before_it_leaves(tmp_path):
    """A real child: the JSON on stdout, metrics and TensorBoard's events all complete."""
    from planner.app.demo import make_demo_dataset
    from tests.faults.common import fitplan_child, write_plan
    from tests.plans import plan_dict

    data = make_demo_dataset(tmp_path / "data", n=6, size=(64, 64), seed=1)
    plan = write_plan(tmp_path / "plan.json", plan_dict(data, epochs=2, steps_per_epoch=2))
    run = tmp_path / "run"
    child = fitplan_child("train", "--plan", plan, "--out-dir", run, "--json")
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0, err[-3000:]
    assert json.loads(out)["epochs"] == 2
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 2
    events = list((run / "tensorboard").rglob("events.out.tfevents.*"))
    assert events and all(p.stat().st_size > 0 for p in events)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train_events = [p for p in events if "train" in p.parts]
    acc = EventAccumulator(str(train_events[0].parent))
    acc.Reload()
    assert any(len(acc.Tensors(t)) == 2 for t in acc.Tags()["tensors"])  # both epochs
