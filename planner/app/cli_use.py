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
        stdout_console().print(escape(export_line(result)), highlight=False, soft_wrap=True)


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
