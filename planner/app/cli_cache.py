"""`fitplan cache`: where the measurement cache is, how much it holds, and `--clear`."""

from __future__ import annotations

from typing import Annotated

import typer

from planner.app.cli_app import JsonOpt, app, handle_errors, print_json, stdout_console


@app.command("cache")
@handle_errors
def cache_cmd(
    clear: Annotated[
        bool, typer.Option("--clear", help="Remove every cached trial and verification result.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Show the measurement cache (location, entries, size) or clear it."""
    from planner.trials import cache
    from trainer.units import fmt_bytes

    removed = cache.clear() if clear else None
    info = cache.info()
    if json_out:
        print_json({**info, **({"removed": removed} if clear else {})})
        return
    out = stdout_console()
    if clear:
        out.print(f"removed {removed} entries from {info['path']}", highlight=False)
    out.print(
        f"measurement cache: {info['path']} ({info['entries']} entries, {fmt_bytes(info['bytes'])}); "
        f"set ${cache.ENV_VAR} to move it",
        highlight=False,
        markup=False,
    )
