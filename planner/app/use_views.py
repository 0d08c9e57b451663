"""How `fitplan evaluate`, `predict` and `export` show their results: rich tables and bars.

Rendering only; the work is in `trainer.use.evaluate`, `trainer.use.predict` and `trainer.use.export`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table


@contextlib.contextmanager
def file_progress(console: Console, label: str) -> Iterator[Callable[[int, int, Path], None]]:
    """A progress bar on `console` (stderr), fed by `callback(done, total, path)`."""
    bar = Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[name]}"),
        console=console,
        transient=True,
    )
    task = None

    def update(done: int, total: int, path: Path) -> None:
        nonlocal task
        if task is None:
            task = bar.add_task(label, total=total, name="")
        bar.update(task, completed=done, name=Path(path).name)

    with bar:
        yield update


def _f(v: Any) -> str:
    return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def evaluation_table(result: dict[str, Any]) -> Table:
    """Per-class scores and the foreground means of `trainer.use.evaluate.evaluate`."""
    table = Table(
        title=f"{result['images']} images, {result['pixels']:,} pixels (scores pooled over pixels)"
    )
    for col in ("class", "mask value", "Dice", "IoU", "precision", "recall", "pixels"):
        table.add_column(col, justify="right")
    for c in result["per_class"]:
        table.add_row(
            f"{c['class']} {c['name']}" if c.get("name") else str(c["class"]),
            str(c["value"]),
            *(_f(c[k]) for k in ("dice", "iou", "precision", "recall")),
            f"{c['pixels']:,}",
        )
    table.add_row(
        "mean (fg)",
        "",
        *(_f(result[f"{k}_mean"]) for k in ("dice", "iou", "precision", "recall")),
        "",
        style="bold",
    )
    table.caption = (
        f"mean of per-image Dice {_f(result['per_image_dice_mean'])}, "
        f"IoU {_f(result['per_image_iou_mean'])}; {result['seconds']} s"
    )
    return table


def export_line(result: dict[str, Any]) -> str:
    """One line: where the export went, its size and how closely it matches."""
    q = f" {result['quantize']}" if result["quantize"] else ""
    tol = result["tolerance"]
    return (
        f"{result['format']}{q}: {result['path']}  {result['bytes'] / 2**20:.2f} MiB\n"
        f"  probabilities vs the trained model: max |diff| {result['max_abs_diff']:.2e} "
        f"(<= {tol['max_abs_diff']:g}), mean {result['mean_abs_diff']:.2e} "
        f"(<= {tol['mean_abs_diff']:g}); same class on {100 * result['mask_agreement']:.3f}% "
        f"of pixels (>= {100 * tol['mask_agreement']:g}%); {result['check_inputs']} inputs "
        f"from {result['inputs_from']}"
    )


__all__ = ["evaluation_table", "export_line", "file_progress"]
