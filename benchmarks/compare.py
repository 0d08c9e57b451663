"""The memory gate: `python benchmarks/compare.py RESULTS BASELINE [--threshold 0.10]`.

Exits 1 when any configuration's peak memory grew more than the threshold (default
10%) over the baseline, or when a baseline configuration has no measured peak in the
results (missing, failed, out of memory: a regression must not hide behind a crash).
A configuration only in the results is reported as new and does not fail: it has no
baseline yet (add it by updating the baseline). Step time is reported as a ratio, never
gated: machines are noisy. Exit 2: a file cannot be read.

Both files are `benchmarks/run.py` documents (`{"records": [...]}`) or bare record
lists; records are matched by `config` (backbone, input size, micro-batch, precision).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

THRESHOLD = 0.10
MIB = 2**20


@dataclass(frozen=True)
class Row:
    """One configuration's comparison.

    Args:
        key: the configuration's name, e.g. `unet_small 128x128 mb8 float32`.
        verdict: `"ok"`, `"regressed"` (peak grew > threshold), `"improved"` (shrank >
            threshold: consider updating the baseline), `"missing"` (in the baseline,
            no measured peak in the results), `"new"` (not in the baseline).
        base_peak, peak: peak bytes (`None` where absent).
        growth: peak / base_peak - 1.
        time_ratio: step time / baseline step time (reported only).
        note: why, for missing configurations.
    """

    key: str
    verdict: str
    base_peak: int | None = None
    peak: int | None = None
    growth: float | None = None
    time_ratio: float | None = None
    note: str = ""

    @property
    def fails(self) -> bool:
        return self.verdict in ("regressed", "missing")


@dataclass
class Comparison:
    rows: list[Row] = field(default_factory=list)
    threshold: float = THRESHOLD
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[Row]:
        return [r for r in self.rows if r.fails]

    @property
    def ok(self) -> bool:
        return not self.failed


def _records(doc: Any, name: str) -> list[dict[str, Any]]:
    records = doc.get("records") if isinstance(doc, dict) else doc
    if not isinstance(records, list):
        raise ValueError(f"{name}: expected a results document with 'records' or a list of records")
    return records


def config_id(config: dict[str, Any]) -> tuple:
    """The matching key of a record's `config`."""
    h, w = config["input_size"]
    return (config["backbone"], int(h), int(w), int(config["micro_batch"]), config["precision"])


def _label(cid: tuple) -> str:
    b, h, w, mb, p = cid
    return f"{b} {h}x{w} mb{mb} {p}"


def _peak(r: dict[str, Any]) -> int | None:
    p = r.get("peak_bytes")
    return (
        int(p) if r.get("status", "ok") == "ok" and isinstance(p, (int, float)) and p > 0 else None
    )


def compare(results: Any, baseline: Any, threshold: float = THRESHOLD) -> Comparison:
    """Compare two results documents (or record lists); pure, no I/O.

    Args:
        results: the new run.
        baseline: the committed baseline.
        threshold: largest allowed relative growth of a peak. Defaults to `0.10`.
    """
    new = {config_id(r["config"]): r for r in _records(results, "results")}
    old = {config_id(r["config"]): r for r in _records(baseline, "baseline")}
    out = Comparison(threshold=threshold)
    for cid in sorted(old.keys() | new.keys()):
        b, r = old.get(cid), new.get(cid)
        key = _label(cid)
        if r is None:
            out.rows.append(Row(key, "missing", _peak(b), note="not measured in the results"))
            continue
        if b is None or _peak(b) is None:
            out.rows.append(Row(key, "new", None, _peak(r), note="no baseline peak"))
            continue
        base_peak, peak = _peak(b), _peak(r)
        if peak is None:
            why = f"{r.get('status', '?')}: {r.get('reason', '')}".strip(": ")
            out.rows.append(Row(key, "missing", base_peak, note=f"no measured peak ({why})"))
            continue
        growth = peak / base_peak - 1
        # The epsilon keeps a growth of exactly the threshold (1100 over 1000) a pass.
        over, under = growth > threshold + 1e-9, growth < -threshold - 1e-9
        verdict = "regressed" if over else "improved" if under else "ok"
        t_new, t_old = r.get("step_time_s"), b.get("step_time_s")
        ratio = t_new / t_old if t_new and t_old else None
        out.rows.append(Row(key, verdict, base_peak, peak, growth, ratio))
    for what in ("tensorflow", "keras", "cpu"):
        a = (baseline.get("machine") or {}).get(what) if isinstance(baseline, dict) else None
        z = (results.get("machine") or {}).get(what) if isinstance(results, dict) else None
        if a and z and a != z:
            out.notes.append(f"{what} differs from the baseline's: {z!r} vs {a!r}")
    return out


def render(c: Comparison) -> str:
    """The comparison as a table and a one-line verdict."""

    def mib(v: int | None) -> str:
        return "-" if v is None else f"{v / MIB:.0f}"

    lines = [
        f"{'configuration':<40} {'base MiB':>9} {'now MiB':>8} {'growth':>8} {'time x':>7}  verdict",
    ]
    for r in c.rows:
        growth = "-" if r.growth is None else f"{r.growth:+.1%}"
        ratio = "-" if r.time_ratio is None else f"{r.time_ratio:.2f}"
        verdict = r.verdict.upper() if r.fails else r.verdict
        note = f"  ({r.note})" if r.note else ""
        lines.append(
            f"{r.key:<40} {mib(r.base_peak):>9} {mib(r.peak):>8} {growth:>8} {ratio:>7}  {verdict}{note}"
        )
    lines.append(
        "time x: step time / baseline step time (reported, never gated: machines are noisy)"
    )
    lines += [f"note: {n}" for n in c.notes]
    if any(r.verdict == "improved" for r in c.rows):
        lines.append("note: peaks fell by more than the threshold: update the baseline if intended")
    if c.ok:
        lines.append(f"PASS: no peak grew more than {c.threshold:.0%} over the baseline")
    else:
        lines.append(
            f"FAIL: {len(c.failed)} configuration(s) regressed by more than {c.threshold:.0%} "
            "or have no measured peak: " + ", ".join(r.key for r in c.failed)
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("baseline", type=Path)
    parser.add_argument("--threshold", type=float, default=THRESHOLD)
    args = parser.parse_args(argv)
    docs = []
    for path in (args.results, args.baseline):
        try:
            docs.append(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            print(f"{path}: cannot read results ({exc})", file=sys.stderr)
            return 2
    try:
        c = compare(docs[0], docs[1], args.threshold)
    except (ValueError, KeyError, TypeError) as exc:
        print(f"cannot compare {args.results} with {args.baseline}: {exc}", file=sys.stderr)
        return 2
    print(render(c))
    return 0 if c.ok else 1


if __name__ == "__main__":
    sys.exit(main())
