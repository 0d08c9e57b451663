"""The documentation's tables stay true to the code."""

import re
from pathlib import Path

from trainer.errors import EXIT_CODES

ROOT = Path(__file__).resolve().parents[2]


def test_exit_code_table_lists_exactly_the_codes_in_errors_py():
    text = (ROOT / "docs" / "cli.md").read_text()
    section = text.split("## Exit codes", 1)[1]
    documented = {int(m) for m in re.findall(r"^\| (\d+) \|", section, flags=re.M)}
    assert documented == set(EXIT_CODES)


def test_every_cli_command_is_documented():
    from typer.main import get_command

    from planner.app.cli import app

    text = (ROOT / "docs" / "cli.md").read_text()
    for name in get_command(app).commands:
        assert f"`fitplan {name}" in text, name
