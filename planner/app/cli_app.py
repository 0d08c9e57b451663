"""The `fitplan` typer app and what every command module shares.

Owns the `app` object (the command modules `cli_inspect`, `cli_train` and `cli_use`
register on it), the `--debug` callback, error handling (`handle_errors`: a
`FitplanError` becomes one red line on stderr and its exit code), the consoles and
`print_json`, and the option types more than one module uses.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from trainer.errors import FitplanError, FitplanWarning
from trainer.train.memory import configure_malloc

app = typer.Typer(
    name="fitplan",
    help="Measure this machine, plan a segmentation training run that fits, and train it.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish)
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# soft_wrap: a line longer than the terminal (or than 80 columns in a log file) stays
# one line; rich would otherwise break it at the console width.
err = Console(stderr=True, soft_wrap=True)


def stdout_console() -> Console:
    """Console for tables on stdout: 160 columns when it is a file or a pipe.

    Rich falls back to 80 columns there, which folds the candidate table into
    unreadable slivers in a log; a terminal (or `COLUMNS`) keeps its own width.
    """
    if sys.stdout.isatty() or os.environ.get("COLUMNS"):
        return Console()
    return Console(width=160)


_state = {"debug": False}

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(fn: F) -> F:
    """Turn `FitplanError` into one line on stderr and its exit code; Ctrl-C into 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FitplanError as exc:
            if _state["debug"]:
                raise
            # escape: file names such as "[/x]" are not rich markup.
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def print_json(obj: Any) -> None:
    """The one way to put JSON on stdout."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def _print_version(value: bool) -> None:
    if value:
        from trainer import __version__

        typer.echo(f"fitplan {__version__}")
        raise typer.Exit()


class ConsoleLines(logging.Handler):
    """The `fitplan` logger's lines (training's epoch lines, `train.log`'s) on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        style = "yellow" if record.levelno >= logging.WARNING else None
        err.print(record.getMessage(), style=style, highlight=False, markup=False)


def _log_to_console() -> None:
    logger = logging.getLogger("fitplan")
    if not any(isinstance(h, ConsoleLines) for h in logger.handlers):
        logger.addHandler(ConsoleLines())
    logger.setLevel(logging.INFO)
    logger.propagate = False  # the root logger would print each line a second time


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            "-V",
            help="Print fitplan's version and exit.",
            callback=_print_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """fitplan: measure, plan, train."""
    _state["debug"] = debug
    _log_to_console()
    configure_malloc()  # before any command starts TensorFlow's threads (trainer.train.memory)
    if not debug:
        # TensorFlow's C++ start-up chatter (CUDA stubs, CPU flags) is noise for a user;
        # set before any command imports TensorFlow. --debug keeps it.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _show_fitplan_warnings()


def _show_fitplan_warnings() -> None:
    """A `FitplanWarning` (an excluded pair, a plan made elsewhere) becomes one yellow line."""
    previous = warnings.showwarning
    if getattr(previous, "fitplan", False):
        return

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, FitplanWarning):
            err.print(
                f"[yellow]warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True
            )
        else:
            previous(message, category, filename, lineno, file, line)

    show.fitplan = True  # type: ignore[attr-defined]
    warnings.showwarning = show


JsonOpt = Annotated[bool, typer.Option("--json", help="Print only JSON on stdout.")]
DataArg = Annotated[Path, typer.Argument(help="Dataset root holding the image and mask folders.")]
