"""The `fitplan` command line. Thin: parse options, call one library function, render.

Every command that takes `--json` prints only JSON on stdout; progress and
diagnostics go to stderr. A `FitplanError` becomes one red line on stderr and the
exit code of its class (docs/cli.md); `--debug` shows the traceback instead.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from trainer.errors import FitplanError

app = typer.Typer(
    name="fitplan",
    help="Measure this machine, plan a segmentation training run that fits, and train it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

err = Console(stderr=True)
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
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def print_json(obj: Any) -> None:
    """The one way to put JSON on stdout."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
) -> None:
    """fitplan: measure, plan, train."""
    _state["debug"] = debug


JsonOpt = Annotated[bool, typer.Option("--json", help="Print only JSON on stdout.")]


@app.command()
@handle_errors
def probe(
    json_out: JsonOpt = False,
    out_dir: Annotated[
        Path, typer.Option("--out-dir", help="Where runs will be written (for free disk space).")
    ] = Path("."),
    no_tf: Annotated[
        bool, typer.Option("--no-tf", help="Skip the TensorFlow fields (saves ~3 s and ~0.5 GiB).")
    ] = False,
) -> None:
    """Inspect GPUs, host memory (cgroup-aware), CPU, disk and TensorFlow; derive a memory budget."""
    from planner import hardware

    report = hardware.probe(out_dir=out_dir, with_tensorflow=not no_tf)
    if json_out:
        print_json(report)
    else:
        Console().print(hardware.probe_table(report))


@app.command()
@handle_errors
def scan(
    data: Annotated[Path, typer.Argument(help="Dataset root holding the image and mask folders.")],
    images: Annotated[str, typer.Option(help="Image folder under DATA.")] = "images",
    masks: Annotated[str, typer.Option(help="Mask folder under DATA.")] = "masks",
    json_out: JsonOpt = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the fingerprint JSON here.")
    ] = None,
) -> None:
    """Pair images with masks, validate them and write a fingerprint."""
    from planner import dataset

    fp = dataset.scan(data, images=images, masks=masks)
    if out is not None:
        dataset.save_fingerprint(fp, out)
    for line in dataset.warnings(fp):
        err.print(f"[yellow]warning:[/] {line}", highlight=False, soft_wrap=True)
    if json_out:
        print_json(fp)
    else:
        Console().print(dataset.scan_table(fp))
    dataset.require_trainable(fp)


@app.command("demo-data")
@handle_errors
def demo_data(
    out: Annotated[Path, typer.Argument(help="Folder to create (images/ and masks/ inside).")],
    classes: Annotated[int, typer.Option(help="2 (binary) or 3 classes.")] = 2,
    n: Annotated[int, typer.Option("--n", help="Number of image/mask pairs.")] = 32,
    size: Annotated[str, typer.Option(help="Image size as HxW.")] = "128x128",
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same files).")] = 0,
) -> None:
    """Write a deterministic synthetic segmentation dataset (shapes on textured noise)."""
    from planner import demo

    path = demo.make_demo_dataset(out, classes=classes, n=n, size=demo.parse_size(size), seed=seed)
    err.print(f"wrote {n} pairs to {path}")


if __name__ == "__main__":  # pragma: no cover
    app()
