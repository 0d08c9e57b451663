"""Package boundaries: `trainer` never imports `planner`; the planner's parent never imports TF.

ruff's banned-api (pyproject.toml) flags `import planner` in trainer/; the walk here also
finds what ruff cannot see: `importlib.import_module("planner...")`, `__import__` and
`"planner.module:function"` entry strings. The TensorFlow check runs the planner's real
parent path (probe, scan, candidates, trials, choice, verification, plan file) in a fresh
interpreter, with only the trial runner replaced by a fake, so other tests' imports cannot
hide an import of TensorFlow.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# A string naming a planner module or entry point: "planner", "planner.x.y", "planner.x:f".
_PLANNER_NAME = re.compile(r"^planner(\.\w+)*(:\w+)?$")


def _is_planner(name: str | None) -> bool:
    return name is not None and (name == "planner" or name.startswith("planner."))


def planner_imports(source: str) -> list[int]:
    """Line numbers in `source` that import `planner` or name one of its modules."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            hit = any(_is_planner(a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            hit = node.level == 0 and _is_planner(node.module)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            hit = bool(_PLANNER_NAME.match(node.value))  # importlib, __import__, runpy, -m
        else:
            hit = False
        if hit:
            lines.append(node.lineno)
    return sorted(lines)


def test_the_walk_finds_every_way_of_importing_planner():
    source = textwrap.dedent(
        '''
        """A docstring that mentions the planner package is fine."""
        import os
        import planner
        import planner.trials.trial as trial
        from planner.search import choose

        def lazy():
            from planner import make_plan
            import importlib
            importlib.import_module("planner.trials.child")
            __import__("planner")
            return "planner.trials.child:main"

        from trainer import plan
        '''
    )
    assert planner_imports(source) == [4, 5, 6, 9, 11, 12, 13]


def test_trainer_never_imports_planner():
    found = {
        str(path.relative_to(REPO)): hits
        for path in sorted((REPO / "trainer").rglob("*.py"))
        if (hits := planner_imports(path.read_text()))
    }
    assert found == {}, f"trainer/ imports planner/ (file: lines): {found}"


_PARENT_PATH = """
import json, sys
from pathlib import Path

import planner.trials.trial as trial
from planner.app.demo import make_demo_dataset
from planner.make_plan import make_plan
from planner.trials.spec import TrialResult

tmp = Path(sys.argv[1])
calls = []


def fake_run_trial(spec, *, timeout_s, memory_limit_bytes=None, on_event=None):
    # Affine peaks, as a real trial measures them: no child process is started.
    calls.append(list(spec.micro_batches))
    return [
        TrialResult("ok", mb, peak_bytes=(600 + 30 * mb) * 2**20, step_time_s=0.01 * mb,
                    trace_time_s=1.0, traces=1, child_pid=1)
        for mb in spec.micro_batches
    ]


# Every planner module that holds the runner by name gets the fake.
for mod in list(sys.modules.values()):
    if getattr(mod, "__name__", "").startswith("planner") and getattr(mod, "run_trial", None) is trial.run_trial:
        mod.run_trial = fake_run_trial

data = make_demo_dataset(tmp / "data", n=8, size=(64, 64), seed=0)
result = make_plan(data, budget_memory=4 * 2**30, backbones=["unet_small"], sizes=[64],
                   out=tmp / "plan.json")
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
print(json.dumps({"calls": calls, "plan": (tmp / "plan.json").exists(),
                  "micro_batch": result.plan.micro_batch, "heavy": heavy}))
"""


def test_the_planners_parent_never_imports_tensorflow(tmp_path):
    """`make_plan` end to end in a fresh interpreter: TF and Keras stay out of the parent."""
    out = _run_fresh(_PARENT_PATH, str(tmp_path))
    assert out["calls"], "the fake trial runner was never called: real children ran"
    assert out["plan"] and out["micro_batch"] >= 1
    assert out["heavy"] == [], f"the parent imported {out['heavy'][:10]}"


_AUTO_CLI = textwrap.dedent(
    """
    import json, sys
    import planner.app.auto as auto
    from planner.app.cli import app

    seen = {}

    def fake_make_plan(data, **kw):  # what `train --auto` has imported when planning starts
        seen["heavy"] = sorted(m for m in ("tensorflow", "keras") if m in sys.modules)
        raise SystemExit(0)

    auto.make_plan = fake_make_plan
    try:
        app(json.loads(sys.argv[1]), standalone_mode=False)
    except SystemExit:
        pass
    print(json.dumps(seen))
    """
)


@pytest.mark.parametrize("command", ["train --auto", "demo"])
def test_train_auto_plans_before_importing_tensorflow(tmp_path, command):
    """`train --auto` and `demo` (the command line, not only `make_plan`) plan without
    Keras loaded: their progress display is a Keras callback, made once planning is done."""
    from planner.app.demo import make_demo_dataset

    run = str(tmp_path / "run")
    if command == "demo":
        args = ["demo", "--out-dir", run]
    else:
        data = make_demo_dataset(tmp_path / "data", n=4, size=(32, 32), seed=0)
        args = ["train", "--auto", str(data), "--out-dir", run]
    out = _run_fresh(_AUTO_CLI, json.dumps(args))
    assert out == {"heavy": []}, out


def _run_fresh(script: str, *args: str) -> dict:
    """Run `script` in a fresh interpreter from the repository; its last line as JSON."""
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
