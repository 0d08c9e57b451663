"""The report's figures, drawn with matplotlib and returned as PNG bytes.

Only the object-oriented API (`Figure` + the Agg canvas) is used: no pyplot, so
no global backend is switched and no window can open, whatever the user's setup.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from trainer.errors import FitplanError

GIB = 2**30


def _figure(width: float, height: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise FitplanError(
            "`fitplan report` draws its figures with matplotlib, which is not installed",
            hint='from the fitplan checkout: pip install -e ".[report]" (or: pip install matplotlib)',
        ) from exc
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def require_matplotlib() -> None:
    """Raise the install hint before any slow work when matplotlib is missing."""
    _figure(1, 1)


def curves(history: list[dict[str, Any]]) -> bytes:
    """Loss, Dice (and IoU) and learning rate per epoch, training and validation."""
    fig = _figure(12, 3.4)
    axes = fig.subplots(1, 3)
    epochs = [r["epoch"] for r in history]
    panels = [
        ("loss", ["loss", "val_loss"], False),
        ("Dice / IoU", ["dice", "val_dice", "iou", "val_iou"], False),
        ("learning rate", ["learning_rate"], True),
    ]
    for ax, (title, keys, log) in zip(axes, panels, strict=True):
        for key in keys:
            pts = [(e, r[key]) for e, r in zip(epochs, history, strict=True) if key in r]
            if pts:
                style = "--" if key.startswith("val_") else "-"
                ax.plot(*zip(*pts, strict=True), style, marker="o", markersize=3, label=key)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        if log:
            ax.set_yscale("log")
        if ax.lines:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return _png(fig)


def memory_bars(budget: int | None, predicted: int | None, measured: int | None) -> bytes:
    """Budget, predicted peak and measured peak side by side, in GiB."""
    fig = _figure(6, 2.6)
    ax = fig.subplots()
    items = [("budget", budget, "#999999"), ("predicted peak", predicted, "#4c72b0")]
    items.append(("measured peak", measured, "#dd8452"))
    shown = [(n, v, c) for n, v, c in items if v]
    ax.barh([n for n, _, _ in shown], [v / GIB for _, v, _ in shown], color=[c for *_, c in shown])
    for i, (_, v, _) in enumerate(shown):
        ax.text(v / GIB, i, f" {v / GIB:.2f} GiB", va="center", fontsize=9)
    ax.set_xlabel("GiB")
    ax.invert_yaxis()
    ax.margins(x=0.25)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def trials_plot(candidates: list[dict[str, Any]], budget: int | None) -> bytes:
    """Measured peak memory against micro-batch per candidate (failures as x), fitted lines."""
    fig = _figure(7, 3.6)
    ax = fig.subplots()
    for cand in candidates:
        trials = [t for t in cand.get("trials") or [] if isinstance(t, dict)]
        ok = sorted((t["micro_batch"], t["peak_bytes"]) for t in trials if _ok(t))
        bad = [(t["micro_batch"], t.get("peak_bytes")) for t in trials if not _ok(t)]
        label = candidate_label(cand)
        if ok:
            (line,) = ax.plot(*zip(*[(m, p / GIB) for m, p in ok], strict=True), "o")
            line.set_label(label)
            colour = line.get_color()
            fit = cand.get("line") if isinstance(cand.get("line"), dict) else {}
            if "a" in fit and "b" in fit:  # the planner's memory line through the points
                xs = np.linspace(0, max(max(m for m, _ in ok), cand.get("micro_batch") or 0), 20)
                ax.plot(xs, (fit["a"] + fit["b"] * xs) / GIB, "--", color=colour, linewidth=1)
        else:
            colour = None
        for mb, peak in bad:
            ax.plot(mb, (peak or 0) / GIB, "x", color=colour, markersize=8)
    if budget:
        ax.axhline(budget / GIB, color="#999999", linestyle="--", label="budget")
    ax.set_xlabel("micro-batch")
    ax.set_ylabel("peak memory (GiB)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return _png(fig)


def _ok(trial: dict[str, Any]) -> bool:
    return trial.get("status") == "ok" and isinstance(trial.get("peak_bytes"), (int, float))


def candidate_label(cand: dict[str, Any]) -> str:
    size = cand.get("input_size")
    size_s = f"{size[0]}x{size[1]}" if isinstance(size, (list, tuple)) and len(size) == 2 else ""
    parts = [
        str(cand.get("backbone", cand.get("label", "?"))),
        size_s,
        str(cand.get("precision", "")),
    ]
    return " ".join(p for p in parts if p)


def samples(rows: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], names: list[str]) -> bytes:
    """One row per image: the image, its ground truth and the prediction; a legend names
    the classes' colours (`names`: one per class, the plan's `data.class_names`)."""
    from matplotlib import colormaps
    from matplotlib.patches import Patch

    num_classes = len(names)
    fig = _figure(10, 2.7 * len(rows) + 0.6)
    axes = np.atleast_2d(fig.subplots(len(rows), 3))
    vmax = max(1, num_classes - 1)
    cmap = colormaps["viridis"]
    handles = [Patch(color=cmap(i / vmax), label=f"{i}: {n}") for i, n in enumerate(names)]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(6, num_classes), fontsize=8)
    for (title, image, truth, pred), ax_row in zip(rows, axes, strict=True):
        ax_row[0].imshow(image)
        ax_row[1].imshow(truth, cmap="viridis", vmin=0, vmax=vmax, interpolation="nearest")
        ax_row[2].imshow(pred, cmap="viridis", vmin=0, vmax=vmax, interpolation="nearest")
        for ax, name in zip(ax_row, (title, "ground truth", "prediction"), strict=True):
            ax.set_title(name, fontsize=9)
            ax.set_axis_off()
    return _png(fig)


__all__ = [
    "candidate_label",
    "curves",
    "memory_bars",
    "require_matplotlib",
    "samples",
    "trials_plot",
]
