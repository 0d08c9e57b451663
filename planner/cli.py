"""The `fitplan` command line. Thin: parse options, call one library function, render.

Every command that takes `--json` prints only JSON on stdout; progress and
diagnostics go to stderr. A `FitplanError` becomes one red line on stderr and the
exit code of its class (docs/cli.md); `--debug` shows the traceback instead.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

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


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
) -> None:
    """fitplan: measure, plan, train."""
    _state["debug"] = debug
    if not debug:
        # TensorFlow's C++ start-up chatter (CUDA stubs, CPU flags) is noise for a user;
        # set before any command imports TensorFlow. --debug keeps it.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


JsonOpt = Annotated[bool, typer.Option("--json", help="Print only JSON on stdout.")]


@app.command()
@handle_errors
def probe(
    json_out: JsonOpt = False,
    out_dir: Annotated[
        Path, typer.Option("--out-dir", help="Where runs will be written (for free disk space).")
    ] = Path("."),
    no_tf: Annotated[
        bool,
        typer.Option(
            "--no-tf",
            help="Skip the TensorFlow fields (saves the TF import: 3-9 s and ~0.5 GiB here).",
        ),
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
        err.print(f"[yellow]warning:[/] {escape(line)}", highlight=False, soft_wrap=True)
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
    err.print(f"wrote {n} pairs to {escape(str(path))}", highlight=False)


@app.command()
@handle_errors
def train(
    plan: Annotated[
        Path | None, typer.Option("--plan", help="Plan file to execute (see docs/plan-schema.md).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Run folder to create.")] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="Override the plan's data.path.")
    ] = None,
    val: Annotated[
        Path | None, typer.Option("--val", help="Validation root (same folder names as DATA).")
    ] = None,
    max_epochs: Annotated[int | None, typer.Option("--max-epochs", min=1)] = None,
    max_steps: Annotated[
        int | None,
        typer.Option("--max-steps", min=1, help="Cap optimizer updates per epoch (quick runs)."),
    ] = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Continue the run in this folder.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Train a plan (`--plan P --out RUN`) or continue a killed run (`--resume RUN`)."""
    import trainer.fit as fit
    from trainer.plan import load_plan
    from trainer.progress import RichProgress

    if resume is None and (plan is None or out is None):
        raise typer.BadParameter("give --plan and --out, or --resume RUN")
    p = load_plan(resume / "plan.json" if resume is not None else plan)
    progress = RichProgress(epochs=max_epochs or p.epochs, console=err)
    try:
        if resume is not None:
            result = fit.resume(resume, data_path=_s(data), val_path=_s(val), callbacks=[progress])
        else:
            result = fit.train(
                p,
                out,
                data_path=_s(data),
                val_path=_s(val),
                max_epochs=max_epochs,
                max_steps=max_steps,
                callbacks=[progress],
            )
    finally:
        progress.close()
    _render_train_result(result.metrics, result.run_dir, json_out)


def _s(p: Path | None) -> str | None:
    return None if p is None else str(p)


def _render_train_result(metrics: dict[str, Any], run_dir: Path, json_out: bool) -> None:
    if json_out:
        print_json({"run_dir": str(run_dir), **metrics})
        return
    from rich.table import Table

    table = Table(title=f"run {run_dir}", show_header=False)
    for key in (
        "best_val_dice",
        "best_epoch",
        "epochs",
        "stopped_by",
        "wall_time_s",
        "images_per_s",
        "peak_memory_bytes",
        "predicted_peak_bytes",
        "micro_batch",
        "accumulation_steps",
        "effective_batch",
        "precision",
        "backbone",
    ):
        v = metrics.get(key)
        if key.endswith("bytes") and isinstance(v, (int, float)):
            v = f"{v / 2**30:.2f} GiB"
        elif isinstance(v, float):
            v = f"{v:.4g}"
        table.add_row(key, str(v))
    Console().print(table)


if __name__ == "__main__":  # pragma: no cover
    app()
