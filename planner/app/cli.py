"""The `fitplan` command line. Thin: parse options, call one library function, render.

Every command that takes `--json` prints only JSON on stdout; progress and
diagnostics go to stderr. A `FitplanError` becomes one red line on stderr and the
exit code of its class (docs/cli.md); `--debug` shows the traceback instead.

The commands live in sibling modules, each registering on the one typer `app` of
`cli_app` when imported, in the order `--help` lists them: `cli_inspect` (probe, scan,
demo-data), `cli_train` (demo, plan, train), `cli_use` (evaluate, predict, export,
report), `cli_cache` (cache). The console script and `python -m planner` run `main`, which
runs `app` and then leaves without the interpreter's teardown once TensorFlow is loaded.
"""

from __future__ import annotations

import logging
import os
import sys

# Imported for their commands, in --help order.
from planner.app import cli_inspect, cli_train, cli_use  # noqa: F401
from planner.app.cli_app import app

__all__ = ["app", "main"]

# Last in --help: the cache is housekeeping, not a step of the workflow.
from planner.app import cli_cache  # noqa: E402, F401


def main(argv: list[str] | None = None) -> None:
    """The console script: run the command, then exit without tearing TensorFlow down.

    Why: after a training command every file is written and closed (atomic writes,
    `metrics.json` last, TensorBoard's writers closed by Keras at the end of `fit`), but
    the interpreter's exit then garbage-collects and destroys the traced graphs and
    TensorFlow's objects one by one. Measured after `train --auto` (2-vCPU AMD EPYC,
    AVX2): 2.5 s in some runs, 11 s and 45-60 s in others (a full collection freed
    55,000 objects in 60 s), all of it past the time budget the user gave. So once
    TensorFlow is loaded, the logs and streams are flushed and the process ends with
    `os._exit` and the command's exit code; without TensorFlow (probe, scan, plan) it
    exits normally. Tests call `app` (typer's runner), which never reaches this.
    """
    code: int | str | None = 0
    try:
        app(args=argv, prog_name="fitplan")
    except SystemExit as exc:
        code = exc.code
    if "tensorflow" not in sys.modules:
        raise SystemExit(code)
    if isinstance(code, str):  # SystemExit("message"): print it as the interpreter would
        print(code, file=sys.stderr)
        code = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more to write
            pass
    os._exit(code or 0)


if __name__ == "__main__":  # pragma: no cover
    main()
