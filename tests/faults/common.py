"""Shared pieces of the fault suite: a tiny plan, the CLI, child processes, torn-file checks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from planner.app.cli import app
from tests import plans

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def plan_dict(data_root: Path, **over: Any) -> dict[str, Any]:
    """The smallest real plan: unet_small at 32x32, 2 images per step, a few steps."""
    data = {"val_fraction": 0.3, "mask_values": [0, 255]}
    tiny = plans.plan_dict(
        data_root, data=data, epochs=2, steps_per_epoch=2, augment={"preset": "none"}
    )
    return {**tiny, **over}  # a `data` here replaces the whole object


def write_plan(path: Path, raw: dict[str, Any] | str) -> Path:
    path.write_text(raw if isinstance(raw, str) else json.dumps(raw), encoding="utf-8")
    return path


def cli(*args: str):
    """Run `fitplan ARGS` in-process; assert no traceback reached the user."""
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"uncaught {result.exception!r}\n{result.output}")
    return result


def fitplan_child(*args: str, module: str = "planner.app.cli") -> subprocess.Popen:
    """`python -m MODULE ARGS` as a real child in its own session (signals reach only it)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    # A terminal's default for the child: a test run started in the background (`cmd &`,
    # nohup) has SIGINT ignored, a child inherits that through exec, and Python then
    # installs no KeyboardInterrupt handler (the Ctrl-C test would fail). A handler in
    # this process is reset to the default on exec. (Not preexec_fn: it can deadlock
    # in a process with threads, and TensorFlow's are running here.)
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return subprocess.Popen(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for(child: subprocess.Popen, condition: Callable[[], bool], timeout: float = 300) -> None:
    """Poll until `condition()`; fail (and kill the child) if the child ends or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if child.poll() is not None:
            out, err = child.communicate()
            raise AssertionError(f"child ended (rc {child.returncode}) too early:\n{err[-3000:]}")
        time.sleep(0.1)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait(30)
    raise AssertionError("the condition never came true")


def epochs_done(run: Path) -> int:
    try:
        return int(json.loads((run / "state.json").read_text())["epochs_done"])
    except (FileNotFoundError, ValueError, KeyError):
        return 0


def h5_opens(path: Path) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            fh.visit(lambda name: None)  # walk every group: a torn file fails here
        return True
    except OSError:
        return False


def assert_run_intact(run: Path) -> dict[str, Any]:
    """Every .h5 left opens, state.json names an existing file, no temporary file is left."""
    leftovers = sorted(p.name for p in run.glob(".*tmp*"))
    assert not leftovers, leftovers
    for p in run.glob("*.h5"):
        assert h5_opens(p), f"{p.name} is torn"
    state = json.loads((run / "state.json").read_text())
    if state.get("last_weights"):
        assert (run / state["last_weights"]).exists()
    assert (run / "best.weights.h5").exists()
    return state


def same_tensors(a: Path, b: Path) -> bool:
    """Whether two weights files hold the same arrays, in the same order."""
    import h5py
    import numpy as np

    def arrays(path: Path) -> list:
        out: list = []
        with h5py.File(path, "r") as fh:
            fh.visititems(lambda n, o: out.append(o[()]) if isinstance(o, h5py.Dataset) else None)
        return out

    pairs = list(zip(arrays(a), arrays(b), strict=True))
    return all(np.array_equal(x, y) for x, y in pairs)
