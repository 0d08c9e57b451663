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
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from trainer.errors import FitplanError, FitplanWarning

app = typer.Typer(
    name="fitplan",
    help="Measure this machine, plan a segmentation training run that fits, and train it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

err = Console(stderr=True)


def _stdout() -> Console:
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
BudgetMemoryOpt = Annotated[
    str | None,
    typer.Option("--budget-memory", help="Memory the run may use, e.g. 4GiB (default: probed)."),
]
BudgetTimeOpt = Annotated[
    str | None, typer.Option("--budget-time", help="Wall time for training, e.g. 20m or 1h30m.")
]


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
        _stdout().print(hardware.probe_table(report))


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
    from planner.scan import dataset

    fp = dataset.scan(data, images=images, masks=masks)
    if out is not None:
        dataset.save_fingerprint(fp, out)
    for line in dataset.warnings(fp):
        err.print(f"[yellow]warning:[/] {escape(line)}", highlight=False, soft_wrap=True)
    if json_out:
        print_json(fp)
    else:
        _stdout().print(dataset.scan_table(fp))
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
    from planner.app import demo

    path = demo.make_demo_dataset(out, classes=classes, n=n, size=demo.parse_size(size), seed=seed)
    err.print(f"wrote {n} pairs to {escape(str(path))}", highlight=False)


@app.command()
@handle_errors
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the demo's data and run.")] = Path(
        "fitplan-demo"
    ),
    budget_time: Annotated[
        str, typer.Option("--budget-time", help="Planning + training time.")
    ] = "5m",
    json_out: JsonOpt = False,
) -> None:
    """Generate a small synthetic dataset and run probe, scan, plan, train and evaluate on it."""
    from planner.app.demo_run import run_demo
    from planner.app.units import parse_duration
    from trainer.train.progress import RichProgress

    progress = RichProgress(epochs=0, console=err)
    try:
        summary = run_demo(
            out,
            budget_time_s=parse_duration(budget_time),
            log=lambda line: err.print(line, highlight=False, markup=False),
            callbacks=[progress],
        )
    finally:
        progress.close()
    if json_out:
        print_json(summary)
    else:
        _render_train_result(summary["train"], Path(summary["out"]) / "run", False)
        t = summary["test"]
        _stdout().print(
            f"held-apart test set: Dice {t['dice_mean']:.3f}, IoU {t['iou_mean']:.3f} "
            f"on {t['images']} images; the plan is {summary['plan']}"
        )


@app.command("plan")
@handle_errors
def plan_cmd(
    data: Annotated[Path, typer.Argument(help="Dataset root holding the image and mask folders.")],
    out: Annotated[Path, typer.Option("--out", help="Plan file to write.")] = Path("plan.json"),
    images: Annotated[str, typer.Option(help="Image folder under DATA.")] = "images",
    masks: Annotated[str, typer.Option(help="Mask folder under DATA.")] = "masks",
    val: Annotated[Path | None, typer.Option("--val", help="Separate validation root.")] = None,
    budget_memory: BudgetMemoryOpt = None,
    budget_time: BudgetTimeOpt = None,
    backbones: Annotated[
        str | None, typer.Option("--backbones", help="Comma-separated backbones to consider.")
    ] = None,
    sizes: Annotated[
        str | None, typer.Option("--sizes", help="Comma-separated square crop sides, e.g. 256,384.")
    ] = None,
    precisions: Annotated[
        str | None, typer.Option("--precisions", help="e.g. float32,mixed_bfloat16.")
    ] = None,
    effective_batch: Annotated[int, typer.Option("--effective-batch", min=1)] = 16,
    headroom: Annotated[float, typer.Option("--headroom", min=0.0, max=0.9)] = 0.1,
    weights: Annotated[
        str, typer.Option(help="Encoder weights: none, imagenet or a file.")
    ] = "none",
    devices: Annotated[
        int, typer.Option("--devices", min=0, help="GPUs per worker (0: all visible).")
    ] = 1,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Hosts of a multi-worker run.")
    ] = 1,
    json_out: JsonOpt = False,
) -> None:
    """Measure candidates in child processes and write the plan that fits the budgets."""
    from planner.app.plan_view import plan_table
    from planner.app.units import parse_bytes, parse_duration, parse_int_list, parse_list
    from planner.make_plan import make_plan

    result = make_plan(
        data,
        images=images,
        masks=masks,
        val=val,
        out=out,
        weights=weights,
        budget_memory=parse_bytes(budget_memory) if budget_memory else None,
        budget_time_s=parse_duration(budget_time) if budget_time else None,
        backbones=parse_list(backbones, "--backbones"),
        sizes=parse_int_list(sizes, "--sizes"),
        precisions=parse_list(precisions, "--precisions"),
        effective_batch=effective_batch,
        headroom=headroom,
        devices=devices or None,
        workers=workers,
        log=lambda line: err.print(line, highlight=False, markup=False),
    )
    err.print(
        f"wrote {out}: planning took {result.planning_time_s:.0f} s, "
        f"{result.children} child processes",
        highlight=False,
        markup=False,
    )
    if json_out:
        print_json(result.plan.to_dict())
    else:
        _stdout().print(plan_table(result.plan.to_dict()))


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
    auto: Annotated[
        Path | None,
        typer.Option("--auto", help="Hands-off: probe, scan, plan and train this dataset."),
    ] = None,
    images: Annotated[str, typer.Option(help="Image folder under DATA (--auto).")] = "images",
    masks: Annotated[str, typer.Option(help="Mask folder under DATA (--auto).")] = "masks",
    budget_memory: BudgetMemoryOpt = None,
    budget_time: BudgetTimeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Train a plan (`--plan P --out RUN`) or continue a killed run (`--resume RUN`)."""
    import trainer.train.fit as fit
    from trainer.plan import load_plan
    from trainer.train.progress import RichProgress

    if auto is not None:
        if out is None:
            raise typer.BadParameter("--auto needs --out RUN")
        _train_auto(auto, out, val, images, masks, budget_memory, budget_time, json_out)
        return
    if resume is None and (plan is None or out is None):
        raise typer.BadParameter("give --plan and --out, --resume RUN, or --auto DATA --out RUN")
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


def _train_auto(data, out, val, images, masks, budget_memory, budget_time, json_out) -> None:
    from planner.app.auto import auto_train
    from planner.app.units import parse_bytes, parse_duration
    from trainer.train.progress import RichProgress

    progress = RichProgress(epochs=0, console=err)  # epochs known once planned

    def log(line: str) -> None:
        err.print(line, highlight=False, markup=False)

    try:
        result, trained = auto_train(
            data,
            out,
            val=val,
            images=images,
            masks=masks,
            budget_memory=parse_bytes(budget_memory) if budget_memory else None,
            budget_time_s=parse_duration(budget_time) if budget_time else None,
            callbacks=[progress],
            log=log,
        )
    finally:
        progress.close()
    metrics = {
        **trained.metrics,
        "planning_time_s": round(result.planning_time_s, 2),
        "planning_children": result.children,
    }
    _render_train_result(metrics, trained.run_dir, json_out)


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
    _stdout().print(table)


RunArg = Annotated[Path, typer.Argument(help="Run folder written by `fitplan train`.")]


@app.command()
@handle_errors
def evaluate(
    run: RunArg,
    data: Annotated[Path, typer.Argument(help="Dataset root holding the image and mask folders.")],
    images: Annotated[str, typer.Option(help="Image folder under DATA.")] = "images",
    masks: Annotated[str, typer.Option(help="Mask folder under DATA.")] = "masks",
    json_out: JsonOpt = False,
) -> None:
    """Score a run on a labelled set: Dice, IoU, precision and recall per class (native size)."""
    from planner.app.use_views import evaluation_table, file_progress
    from trainer.use.evaluate import evaluate as evaluate_run

    with file_progress(err, "evaluating") as progress:
        result = evaluate_run(run, data, images=images, masks=masks, progress=progress)
    if json_out:
        print_json(result)
    else:
        _stdout().print(evaluation_table(result))


@app.command()
@handle_errors
def predict(
    run: RunArg,
    inputs: Annotated[list[Path], typer.Argument(help="Image files and/or folders.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the mask PNGs.")],
    overlay: Annotated[
        bool, typer.Option("--overlay", help="Also write NAME_overlay.png (mask over image).")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Write one mask PNG per input at its own size (0/255 binary, class index multi-class)."""
    from planner.app.use_views import file_progress
    from trainer.use.predict import predict as predict_masks

    with file_progress(err, "predicting") as progress:
        written = predict_masks(run, inputs, out, overlay=overlay, progress=progress)
    if json_out:
        print_json([str(p) for p in written])
    else:
        err.print(f"wrote {len(written)} masks to {escape(str(out))}", highlight=False)


@app.command()
@handle_errors
def export(
    run: RunArg,
    fmt: Annotated[
        str, typer.Option("--format", help="keras, savedmodel (a folder) or tflite.")
    ] = "keras",
    quantize: Annotated[
        str | None, typer.Option(help="float16 or int8 (tflite only; int8 needs the data).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Target file/folder (default RUN/export/...).")
    ] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="Dataset root (default: the plan's data.path).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Export the best model; checks it predicts like the trained model and prints its size."""
    from planner.app.use_views import export_line
    from trainer.use.export import export as export_run

    result = export_run(run, fmt, quantize, out, data_root=data)
    if json_out:
        print_json(result)
    else:
        _stdout().print(escape(export_line(result)), highlight=False, soft_wrap=True)


@app.command()
@handle_errors
def report(
    run: RunArg,
    out: Annotated[
        Path | None, typer.Option("--out", help="HTML file (default RUN/report.html).")
    ] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="Dataset root for the validation images.")
    ] = None,
) -> None:
    """Write a self-contained HTML report: curves, memory plan, validation predictions."""
    from planner.app.report import report as write_report

    path = write_report(run, out, data_root=data)
    typer.echo(str(path))  # on stdout, so `open "$(fitplan report RUN)"` works


if __name__ == "__main__":  # pragma: no cover
    app()
