"""Command-line conventions: --version, -h, completion, usage errors before any work.

The "before any work" cases run in a fresh interpreter, so other tests' imports cannot
hide an import of TensorFlow; there the planner and trainer entry points are replaced by
functions that fail, so a check that ran too late shows up as exit code 99.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from planner.app.cli import app
from tests.plans import plan_dict

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]


def test_version_short_help_and_completion():
    from trainer import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"fitplan {__version__}"
    result = runner.invoke(app, ["train", "-h"])
    assert result.exit_code == 0 and "--max-epochs" in result.stdout
    assert "--install-completion" in runner.invoke(app, ["-h"]).stdout


def test_help_lists_the_choices():
    text = runner.invoke(app, ["plan", "-h"], terminal_width=200).stdout
    for word in ("resnet50", "mobilenet_v3_small", "mixed_float16", "imagenet"):
        assert word in text, word
    text = runner.invoke(app, ["export", "-h"], terminal_width=200).stdout
    assert "savedmodel" in text and "int8" in text


_CASES = [
    ["plan", "{data}", "--backbones", "resnet9000"],
    ["plan", "{data}", "--sizes", "250"],
    ["plan", "{data}", "--precisions", "float64"],
    ["plan", "{data}", "--weights", "{tmp}/no-such-weights.h5"],
    ["plan", "{data}", "--budget-memory", "lots"],
    ["plan", "{data}", "--budget-time", "soon"],
    ["train", "--auto", "{data}", "--out-dir", "{tmp}/r", "--backbones", "resnet9000"],
    ["train", "--auto", "{data}", "--out-dir", "{tmp}/r", "--budget-memory", "4XB"],
    ["train", "--auto", "{data}", "--plan", "{plan}", "--out-dir", "{tmp}/r"],
    ["train", "--auto", "{data}", "--out-dir", "{tmp}/r", "--data", "{data}"],
    ["train", "--plan", "{plan}", "--out-dir", "{tmp}/r", "--backbones", "unet_small"],
    ["train", "--plan", "{plan}", "--out-dir", "{tmp}/r", "--budget-time", "20m"],
    ["train", "--plan", "{plan}"],
    ["train", "--plan", "{plan}", "--out-dir", "{tmp}/r", "--set", "micro_batch=0"],
    ["train", "--plan", "{plan}", "--out-dir", "{tmp}/r", "--set", "nosuch=1"],
    ["train", "--plan", "{plan}", "--out-dir", "{tmp}/r", "--set", "micro_batch"],
    ["train", "--plan", "{plan}", "--out-dir", "{tmp}/r", "--callbacks", "no_such_mod_q:make"],
    ["train", "--plan", "{plan}", "--out-dir", "{tmp}/r", "--callbacks", "nocolon"],
    ["train", "--resume", "{tmp}/r", "--out-dir", "{tmp}/r2"],
    ["train", "--resume", "{tmp}/r", "--set", "epochs=3"],
    ["train", "--out-dir", "{tmp}/r"],
    ["train", "--plan", "{plan}", "--out-dir", "{tmp}/r", "--out", "{tmp}/r3"],
    ["export", "{tmp}/r", "--format", "onnx"],
    ["export", "{tmp}/r", "--format", "tflite", "--quantize", "int4"],
    ["export", "{tmp}/r", "--quantize", "float16"],
    ["predict", "{tmp}/r", "{data}"],
]

_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import planner.make_plan, planner.app.auto
    def boom(*a, **k):
        sys.exit(99)  # reached the work: the check came too late
    planner.make_plan.make_plan = boom
    planner.app.auto.auto_train = boom
    from typer.testing import CliRunner
    from planner.app.cli import app
    out = []
    for args in json.loads(sys.argv[1]):
        r = CliRunner().invoke(app, args)
        out.append([r.exit_code, r.stderr[-400:]])
    heavy = sorted(m for m in ("tensorflow", "keras") if m in sys.modules)
    print(json.dumps({"results": out, "heavy": heavy}))
    """
)


def test_usage_mistakes_exit_2_with_the_reason_before_any_work_or_tensorflow(tmp_path):
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(plan_dict(data)))
    cases = [[a.format(data=data, tmp=tmp_path, plan=plan) for a in c] for c in _CASES]
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, json.dumps(cases)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    for args, (code, stderr) in zip(_CASES, report["results"], strict=True):
        assert code == 2, (args, code, stderr)
        assert "Traceback" not in stderr, args
    assert report["heavy"] == []  # no TensorFlow, no Keras: nothing was started
    messages = {" ".join(a): m for a, (_, m) in zip(_CASES, report["results"], strict=True)}
    assert "resnet9000" in messages["plan {data} --backbones resnet9000"]
    assert "mobilenet_v3_small" in messages["plan {data} --backbones resnet9000"]
    assert "multiple of 32" in messages["plan {data} --sizes 250"]
    assert "--backbones cannot be used without --auto" in " ".join(messages.values())


def test_old_option_names_still_work_and_say_the_new_one(tmp_path):
    result = runner.invoke(app, ["probe", "--no-tf", "--json", "--out-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)
    assert "--out-dir is now --runs-dir" in result.stderr
    result = runner.invoke(app, ["probe", "--no-tf", "--json", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 0 and "now" not in result.stderr
    assert "--out-dir" not in runner.invoke(app, ["probe", "-h"], terminal_width=200).stdout


def test_set_overrides_nested_fields_like_the_plan_file():
    from planner.app.cli_options import apply_settings
    from trainer.plan import Plan

    plan = Plan.from_dict(plan_dict("d"))
    changed = apply_settings(
        plan, ["micro_batch=4", "augment.preset=gentle", "input_size=[64,64]", "data.val=v"]
    )
    assert changed.micro_batch == 4 and changed.augment.preset == "gentle"
    assert changed.input_size == (64, 64) and changed.data.val == "v"
    assert plan.micro_batch == 2  # the original is untouched


def test_every_visible_option_is_documented_and_no_hidden_alias_is():
    from typer.main import get_command

    text = (REPO / "docs" / "cli.md").read_text()
    root = get_command(app)
    missing = []
    for name, command in {"": root, **root.commands}.items():
        for param in command.params:
            for opt in param.opts:
                if opt.startswith("--") and not param.hidden and opt not in text:
                    missing.append(f"{name} {opt}")
    assert missing == []
    renamed = text.split("## Renamed options", 1)[1]
    for old in ("--out-dir DIR` | `--runs-dir", "`--out RUN` | `--out-dir RUN"):
        assert old in renamed


def test_long_lines_are_not_wrapped_at_80_columns():
    import logging

    from planner.app.cli_app import ConsoleLines, err

    line = "epoch 1/50  " + "  ".join(f"field{i} {i}.0000" for i in range(20))
    assert len(line) > 200
    record = logging.LogRecord("fitplan", logging.INFO, __file__, 1, line, (), None)
    with err.capture() as captured:
        ConsoleLines().emit(record)
    assert captured.get() == line + "\n"


@pytest.mark.slow
def test_auto_takes_the_planners_options_and_honours_max_epochs_set_and_callbacks(
    tmp_path, monkeypatch
):
    """`train --auto` passes planner options on and trains what --max-*/--set/--callbacks say."""
    import planner.app.auto as auto
    from planner.app.demo import make_demo_dataset
    from tests.plans import minimal_plan

    data = make_demo_dataset(tmp_path / "data", n=6, size=(48, 48), seed=4)
    seen = {}

    def fake_make_plan(data_root, **kwargs):
        seen.update(kwargs)

        class Result:  # what make_plan returns, for a plan of 5 epochs
            plan = minimal_plan(data_root, data={"val_fraction": 0.34}, epochs=5)
            planning_time_s, children = 0.0, 0

        return Result()

    monkeypatch.setattr(auto, "make_plan", fake_make_plan)
    (tmp_path / "cbmod_auto.py").write_text(
        "import keras, pathlib\n"
        "class Mark(keras.callbacks.Callback):\n"
        "    def on_epoch_end(self, epoch, logs=None):\n"
        "        pathlib.Path('called').write_text(str(epoch))\n"
    )
    monkeypatch.chdir(tmp_path)
    args = ["train", "--auto", str(data), "--out-dir", str(tmp_path / "run"), "--json"]
    args += ["--backbones", "unet_small", "--sizes", "32", "--headroom", "0.2", "--weights", "none"]
    args += ["--max-epochs", "1", "--max-steps", "1", "--set", "lr_schedule.patience=1"]
    args += ["--callbacks", "cbmod_auto:Mark"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert seen["backbones"] == ["unet_small"] and seen["sizes"] == [32]
    assert seen["headroom"] == 0.2 and seen["weights"] == "none"
    assert json.loads(result.stdout)["epochs"] == 1
    ran = json.loads((tmp_path / "run" / "plan.json").read_text())
    assert ran["epochs"] == 1 and ran["steps_per_epoch"] == 1
    assert ran["lr_schedule"]["patience"] == 1
    assert (tmp_path / "called").read_text() == "0"


def test_every_visible_option_and_argument_has_help():
    from typer.main import get_command

    root = get_command(app)
    bare = [
        f"{name} {param.opts}"
        for name, command in {"": root, **root.commands}.items()
        for param in command.params
        if not getattr(param, "hidden", False) and not getattr(param, "help", None)
    ]
    assert bare == []
