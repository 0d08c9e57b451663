"""The application layer: the `fitplan` command line and what it renders.

Owns: `cli` and `cli_*` (typer commands: parse, call one library function, render), `units` (parsing
sizes and durations), `plan_view`/`use_views` (rich tables and progress), `report` and
`report_figures` (the HTML run report), `demo`/`demo_run` (the synthetic demo set and
the README's first command), `auto` (`train --auto`: plan, then train, in one budget).
May import everything below it (`planner.make_plan`, `planner.scan`, `planner.hardware`,
`trainer`). Nothing below imports it. No rule lives here that a Python user could not call.
"""
