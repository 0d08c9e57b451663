"""`fitplan report RUN`: one self-contained HTML page about a training run.

It shows the training curves (history.csv), the memory plan (the budget, the
planner's predicted peak and the measured one, and the candidates the planner tried
with their trials, from plan.json's `evidence`), and a few validation images with
their ground truth and the model's prediction. Figures are PNGs embedded as base64,
so the page is one file that can be mailed or archived. Presentation lives here,
outside the trainer; matplotlib is the optional extra `report` (`pip install -e ".[report]"`).
"""

from __future__ import annotations

import base64
import html
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from planner.app import report_figures as figs
from trainer.atomic import write_text
from trainer.data.masks import class_names, trained_ignore
from trainer.errors import DataError
from trainer.train.run_dir import SUMMARY_KEYS, read_history
from trainer.units import gib
from trainer.use.inference import LoadedRun, load_run, read_image, read_mask

GIB = 2**30
STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:left;font-size:14px}th{background:#f3f3f3}img{max-width:100%}.note{color:#666}"""


def _esc(v: Any) -> str:
    return html.escape(str(v))


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<p><img alt="{_esc(alt)}" src="data:image/png;base64,{data}"></p>'


def _table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _gib(v: Any) -> str:
    return gib(v, missing="not recorded")


def _note(text: str) -> str:
    return f'<p class="note">{_esc(text)}</p>'


def _summary(run: LoadedRun) -> str:
    p, m = run.plan, run.metrics
    rows = [
        ("backbone", p.backbone),
        ("input size", f"{p.input_size[0]}x{p.input_size[1]}"),
        ("micro-batch x accumulation", f"{p.micro_batch} x {p.accumulation_steps}"),
        ("effective batch", p.effective_batch),
        ("precision", p.precision),
        ("data", f"{p.data.path} ({p.data.images} / {p.data.masks})"),
    ]
    for key in SUMMARY_KEYS:
        if key in m:
            v = m[key]
            rows.append((key, f"{v:.4g}" if isinstance(v, float) else v))
    return "<h2>Run</h2>" + _table(rows)


def _curves(run: LoadedRun) -> str:
    history = read_history(run.path / "history.csv")
    if not history:
        return "<h2>Training curves</h2>" + _note("history.csv is missing or empty.")
    return "<h2>Training curves</h2>" + _img(figs.curves(history), "training curves")


def _memory(run: LoadedRun) -> str:
    p, m = run.plan, run.metrics
    budget = p.target.budget_bytes
    # This run's length (metrics.json, trainer/peak.py), else the plan's one figure.
    predicted = m.get("predicted_peak_bytes") or (p.prediction or {}).get("peak_bytes")
    measured = m.get("peak_memory_bytes")
    rows = [
        ("device", f"{p.target.device} {p.target.device_name or ''}".strip()),
        ("budget", f"{_gib(budget)} (from {p.target.budget_source or 'unknown'})"),
        ("predicted peak", _gib(predicted)),
        ("measured peak", _gib(measured)),
    ]
    for adj in m.get("adjustments") or []:
        rows.append(("step-down", adj.get("reason", adj)))
    out = "<h2>Memory plan</h2>" + _table(rows)
    if budget or predicted or measured:
        out += _img(figs.memory_bars(budget, predicted, measured), "memory: budget and peaks")
    return out + _evidence(p.evidence, budget)


def _candidates(evidence: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The candidate list of a plan's evidence, each with a `trials` list.

    `fitplan plan` stores its verdicts under `choice.evaluations`, with the measured
    (micro-batch, peak) points of each in `line.points`; a hand-made evidence object
    may list `candidates` with `trials` directly.
    """
    cands = evidence.get("candidates")
    if cands is None:
        cands = (evidence.get("choice") or {}).get("evaluations") or evidence.get("evaluations")
    if not isinstance(cands, list) or not all(isinstance(c, dict) for c in cands):
        return None
    out = []
    for c in cands:
        trials = c.get("trials")
        line = c.get("line") if isinstance(c.get("line"), dict) else {}
        if trials is None and line.get("source", "fit") == "fit":
            trials = [
                {"micro_batch": m, "status": "ok", "peak_bytes": p}
                for m, p in line.get("points", [])
            ]
        out.append({**c, "trials": trials or []})
    return out


def _evidence(evidence: dict[str, Any] | None, budget: int | None) -> str:
    if not evidence:
        return _note(
            "This plan carries no evidence (it was written by hand, or by a tool that did "
            "not record its candidates): there are no candidates or trials to show."
        )
    cands = _candidates(evidence)
    if cands is None:
        dump = json.dumps(evidence, indent=1, default=str)[:4000]
        return "<h3>Evidence</h3><pre>" + _esc(dump) + "</pre>"
    head = "<tr><th>candidate</th><th>verdict</th><th>micro-batch</th><th>predicted peak</th>"
    head += "<th>measured (micro-batch: status, peak)</th><th>reason</th></tr>"
    body = ""
    for c in cands:
        trials = "; ".join(
            f"{t.get('micro_batch')}: {t.get('status')} {_gib(t.get('peak_bytes'))}"
            for t in c["trials"]
            if isinstance(t, dict)
        )
        body += (
            f"<tr><td>{_esc(figs.candidate_label(c))}</td><td>{_esc(c.get('verdict', ''))}</td>"
            f"<td>{_esc(c.get('micro_batch') or '')}</td>"
            f"<td>{_esc(_gib(c.get('predicted_peak_bytes')))}</td>"
            f"<td>{_esc(trials)}</td><td>{_esc(c.get('reason', ''))}</td></tr>"
        )
    out = f"<h3>Candidates</h3><table>{head}{body}</table>"
    if any(c["trials"] for c in cands):
        out += _img(figs.trials_plot(cands, budget), "measured peak per micro-batch")
    steps = [v for v in evidence.get("verification") or [] if isinstance(v, dict)]
    if steps:
        rows = [
            (
                f"micro-batch {v.get('micro_batch')}",
                f"{v.get('action')}: measured {_gib(v.get('peak_bytes'))}, predicted "
                f"{_gib(v.get('predicted_bytes'))}, allowed {_gib(v.get('allowed_bytes'))} "
                f"{v.get('reason') or ''}",
            )
            for v in steps
        ]
        out += "<h3>Verification run</h3>" + _table(rows)
    if "planning_time_s" in evidence:
        out += _note(
            f"Planning took {evidence['planning_time_s']} s in {evidence.get('children', '?')} "
            "child processes."
        )
    return out


def _pairs_to_show(run: LoadedRun, data_root: str | Path | None) -> tuple[list, str]:
    from trainer.data.pairs import find_pairs
    from trainer.data.pipeline import split_pairs

    d = run.plan.data
    if d.val is not None and data_root is None:
        return find_pairs(d.val, d.images, d.masks).pairs, f"validation set {d.val}"
    root = data_root or d.path
    pairs = find_pairs(root, d.images, d.masks).pairs
    train, val = split_pairs(pairs, d.val_fraction)
    if val:
        return val, f"validation pairs split off {root} (data.val_fraction={d.val_fraction})"
    return train, f"training pairs of {root} (the plan has no validation split)"


def _samples(run: LoadedRun, data_root: str | Path | None, max_images: int) -> str:
    from trainer.use.evaluate import class_scores, confusion, infer_run_mask_values

    title = "<h2>Validation images</h2>"
    try:
        pairs, source = _pairs_to_show(run, data_root)
        if not pairs:
            raise DataError("no image/mask pairs found")
        pairs = pairs[:max_images]
        values = run.mask_values or infer_run_mask_values(pairs, run.num_classes)
        ignore = trained_ignore(run.plan.data.ignore_index, values)
        rows, dices = [], []
        for pair in pairs:
            image = read_image(pair.image, run.plan.data)
            truth = read_mask(pair.mask, values, ignore, run.plan.data.palette)
            pred = run.predict_classes(image)
            keep = truth != ignore if ignore is not None else slice(None)
            fg = class_scores(confusion(truth[keep], pred[keep], run.num_classes))[1:]
            if ignore is not None:
                truth = np.ma.masked_equal(truth, ignore)  # shown blank, scored nowhere
            dice = sum(s["dice"] for s in fg) / len(fg)
            rows.append((f"{pair.key} (Dice {dice:.3f})", image, truth, pred))
            dices.append((pair.key, dice))
    except DataError as exc:
        return title + _note(
            f"Skipped: the data is not available ({exc}). Pass data_root / --data."
        )
    png = figs.samples(rows, class_names(run.plan.data.class_names, run.num_classes))
    scores = _table([(key, f"Dice {d:.3f}") for key, d in dices])
    note = _note(f"{len(rows)} images from the {source}, predicted with overlapping tiles.")
    return title + note + _img(png, "image, truth, prediction") + scores


def report(
    run_dir: str | Path,
    out: str | Path | None = None,
    data_root: str | Path | None = None,
    *,
    max_images: int = 3,
) -> Path:
    """Write the run's HTML report and return its path.

    Args:
        run_dir: the run folder.
        out: the HTML file. `None` (default): `RUN/report.html`.
        data_root: dataset root for the validation images. `None` (default): the
            plan's `data.path` (or `data.val`). When the data is gone, that panel is
            replaced by a note.
        max_images: validation images shown. Defaults to `3`.

    Raises:
        FitplanError: matplotlib is not installed (`pip install -e ".[report]"` in the checkout).
        RunDirError: the run folder is incomplete (names the missing file).
    """
    figs.require_matplotlib()
    run = load_run(run_dir)
    target = Path(out) if out is not None else run.path / "report.html"
    parts = [
        _summary(run),
        _curves(run),
        _memory(run),
        _samples(run, data_root, max_images),
    ]
    stamp = time.strftime("%Y-%m-%d %H:%M")
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>fitplan run "
        f"{_esc(run.path.name)}</title><style>{STYLE}</style></head><body>"
        f"<h1>fitplan run {_esc(run.path)}</h1>{_note('written ' + stamp)}"
        + "".join(parts)
        + "</body></html>\n"
    )
    write_text(target, page)
    return target


__all__ = ["report"]
