"""`fitplan probe`, `scan` and `demo-data`: look at the machine and the data, or make data."""

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
from planner.app.cli_labels import (
    ClassesOpt,
    IgnoreIndexOpt,
    MergeRareOpt,
    PaletteOpt,
    data_options,
    scan_options,
)


@app.command()
@handle_errors
def probe(
    json_out: JsonOpt = False,
    runs_dir: Annotated[
        Path | None,
        typer.Option(
            "--runs-dir", help="Where runs will be written, for its free disk space [default: .]."
        ),
    ] = None,
    out_dir_old: Annotated[Path | None, typer.Option("--out-dir", hidden=True)] = None,
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
    from planner.app.cli_options import renamed

    runs = renamed(runs_dir, out_dir_old, "--runs-dir", "--out-dir") or Path(".")
    report = hardware.probe(out_dir=runs, with_tensorflow=not no_tf)
    if json_out:
        print_json(report)
    else:
        stdout_console().print(hardware.probe_table(report))


@app.command()
@handle_errors
def scan(
    data: DataArg,
    images: Annotated[str, typer.Option(help="Image folder under DATA.")] = "images",
    masks: Annotated[str, typer.Option(help="Mask folder under DATA.")] = "masks",
    json_out: JsonOpt = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="Fingerprint JSON file to write.")
    ] = None,
    classes: ClassesOpt = None,
    ignore_index: IgnoreIndexOpt = None,
    merge_rare: MergeRareOpt = False,
    palette: PaletteOpt = None,
) -> None:
    """Pair images with masks, validate them and write a fingerprint."""
    from planner.scan import dataset

    labels = scan_options(data_options(classes, ignore_index, merge_rare, palette=palette))
    fp = dataset.scan(data, images=images, masks=masks, **labels)
    if out is not None:
        dataset.save_fingerprint(fp, out)
    for line in dataset.warnings(fp):
        err.print(f"[yellow]warning:[/] {escape(line)}", highlight=False, soft_wrap=True)
    if json_out:
        print_json(fp)
    else:
        stdout_console().print(dataset.scan_table(fp))
    dataset.require_trainable(fp)


@app.command("demo-data")
@handle_errors
def demo_data(
    out: Annotated[Path, typer.Argument(help="Folder to create (images/ and masks/ inside).")],
    classes: Annotated[
        int, typer.Option(help="Classes, 2 (binary, masks 0/255) to 12 (masks hold class indices).")
    ] = 2,
    n: Annotated[int, typer.Option("--n", help="Number of image/mask pairs.")] = 32,
    size: Annotated[str, typer.Option(help="Image size as HxW.")] = "128x128",
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same files).")] = 0,
) -> None:
    """Write a deterministic synthetic segmentation dataset (shapes on textured noise)."""
    from planner.app import demo

    path = demo.make_demo_dataset(out, classes=classes, n=n, size=demo.parse_size(size), seed=seed)
    err.print(f"wrote {n} pairs to {escape(str(path))}", highlight=False)
