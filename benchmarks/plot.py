"""The peak-memory plot: measured peak against micro-batch per backbone, with the fitted lines."""

from __future__ import annotations

import io
import os
from typing import Any

from trainer.atomic import write_bytes

MIB = 2**20


def plot_peaks(
    records: list[dict[str, Any]], path: str | os.PathLike, baseline_bytes: int | None = None
) -> None:
    """Write a PNG: one panel per input size, one colour per backbone (and precision).

    Dots are measured peaks (hollow: the two points the line was fitted to); the solid
    line is the planner's fit through them, extended over the larger sizes it predicts;
    the dotted line is the interpreter + TensorFlow baseline RSS (`baseline_bytes`;
    `None`, the default, draws none).
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on CI
    import matplotlib.pyplot as plt

    ok = [r for r in records if r["status"] == "ok" and r["peak_bytes"]]
    sizes = sorted({tuple(r["config"]["input_size"]) for r in ok}) or [(0, 0)]
    fig, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 4.5), squeeze=False)
    for ax, hw in zip(axes[0], sizes, strict=True):
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in ok:
            c = r["config"]
            if tuple(c["input_size"]) == hw:
                label = c["backbone"] + (
                    "" if c["precision"] == "float32" else f" {c['precision']}"
                )
                groups.setdefault(label, []).append(r)
        for label, members in sorted(groups.items()):
            members.sort(key=lambda r: r["config"]["micro_batch"])
            mbs = [r["config"]["micro_batch"] for r in members]
            peaks = [r["peak_bytes"] / MIB for r in members]
            fit = [r for r in members if (r.get("prediction") or {}).get("source") == "fit point"]
            (pts,) = ax.plot(mbs, peaks, "o", label=label)
            colour = pts.get_color()
            ax.plot(
                [r["config"]["micro_batch"] for r in fit],
                [r["peak_bytes"] / MIB for r in fit],
                "o",
                mfc="white",
                color=colour,
            )
            line = next(
                (r["prediction"] for r in members if "a_bytes" in (r.get("prediction") or {})), None
            )
            if line is not None:
                xs = [min(mbs), max(mbs)]
                ax.plot(
                    xs,
                    [(line["a_bytes"] + line["b_bytes_per_sample"] * x) / MIB for x in xs],
                    "-",
                    color=colour,
                )
        if baseline_bytes:
            ax.axhline(baseline_bytes / MIB, ls=":", color="grey", label="Python + TF baseline")
        ax.set_title(f"{hw[0]}x{hw[1]}: peak vs micro-batch (lines: fit to hollow points)")
        ax.set_xlabel("micro-batch")
        ax.set_ylabel("peak RSS (MiB)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    write_bytes(path, buf.getvalue())
