"""The `fitplan` command line. Thin: parse options, call one library function, render.

Every command that takes `--json` prints only JSON on stdout; progress and
diagnostics go to stderr. A `FitplanError` becomes one red line on stderr and the
exit code of its class (docs/cli.md); `--debug` shows the traceback instead.

The commands live in sibling modules, each registering on the one typer `app` of
`cli_app` when imported, in the order `--help` lists them: `cli_inspect` (probe, scan,
demo-data), `cli_train` (demo, plan, train), `cli_use` (evaluate, predict, export,
report), `cli_cache` (cache). The console script and `python -m planner` run `planner.app.cli:app`.
"""

from __future__ import annotations

# Imported for their commands, in --help order.
from planner.app import cli_inspect, cli_train, cli_use  # noqa: F401
from planner.app.cli_app import app

__all__ = ["app"]

# Last in --help: the cache is housekeeping, not a step of the workflow.
from planner.app import cli_cache  # noqa: E402, F401

if __name__ == "__main__":  # pragma: no cover
    app()
