"""`fitplan evaluate`, `predict`, `export` and `report`: use a trained run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from planner.app.cli_app import (
    DataArg,
    JsonOpt,
    app,
    err,
    handle_errors,
    print_json,
    stdout_console,
)
from planner.app.cli_options import FormatOpt, QuantizeOpt, renamed

RunArg = Annotated[Path, typer.Argument(help="Run folder written by `fitplan train`.")]


@app.command()
@handle_errors
def evaluate(
    run: RunArg,
    data: DataArg,
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
        stdout_console().print(evaluation_table(result))


@app.command()
@handle_errors
def predict(
    run: RunArg,
    inputs: Annotated[list[Path], typer.Argument(help="Image files and/or folders.")],
    out_dir: Annotated[
        Path | None, typer.Option("--out-dir", help="Folder for the mask PNGs (required).")
    ] = None,
    out_old: Annotated[Path | None, typer.Option("--out", hidden=True)] = None,
    overlay: Annotated[
        bool, typer.Option("--overlay", help="Also write NAME_overlay.png (mask over image).")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Write one mask PNG per input at its own size (0/255 binary, class index multi-class)."""
    out = renamed(out_dir, out_old, "--out-dir", "--out")
    if out is None:
        raise typer.BadParameter("give --out-dir DIR, the folder for the mask PNGs")
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
    fmt: FormatOpt = "keras",
    quantize: QuantizeOpt = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Exported model file (a folder for savedmodel; default RUN/export/...)."
        ),
    ] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="Dataset root (default: the plan's data.path).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Export the best model; checks it predicts like the trained model and prints its size."""
    if quantize is not None and fmt != "tflite":
        raise typer.BadParameter(f"--quantize applies to --format tflite only (got {fmt})")
    from planner.app.use_views import export_line
    from trainer.use.export import export as export_run

    result = export_run(run, fmt, quantize, out, data_root=data)
    if json_out:
        print_json(result)
    else:
        stdout_console().print(escape(export_line(result)), highlight=False, soft_wrap=True)


@app.command()
@handle_errors
def report(
    run: RunArg,
    out: Annotated[
        Path | None, typer.Option("--out", help="HTML file to write (default RUN/report.html).")
    ] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="Dataset root for the validation images.")
    ] = None,
) -> None:
    """Write a self-contained HTML report: curves, memory plan, validation predictions."""
    from planner.app.report import report as write_report

    path = write_report(run, out, data_root=data)
    typer.echo(str(path))  # on stdout, so `open "$(fitplan report RUN)"` works
