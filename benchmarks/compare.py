"""The memory gate: `python benchmarks/compare.py RESULTS BASELINE [--threshold 0.10]`.

Exits 1 when any configuration's peak memory grew more than the threshold (default
10%) over the baseline, or when a baseline configuration has no measured peak in the
results (missing, failed, out of memory: a regression must not hide behind a crash).
A configuration only in the results is reported as new and does not fail: it has no
baseline yet (add it by updating the baseline). Step time is reported as a ratio, never
gated: machines are noisy. Exit 2: a file cannot be read.

Peaks depend on the machine kind (oneDNN's instruction set, TF version, threads:
`benchmarks.fingerprint`), so BASELINE is normally a folder of baselines, one per machine
kind, and the one whose fingerprint matches the results' is used. When none matches,
nothing can be gated: the results are stored in the folder as that kind's baseline (to be
committed) and the gate passes with a notice, or fails with `--require-baseline`. A
BASELINE file is used as given, with a note when it comes from another machine kind.

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

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(ROOT))

from benchmarks.fingerprint import fingerprint  # noqa: E402

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


def lowest_peaks(first: Any, *repeats: Any) -> Any:
    """`first` with each configuration's record replaced by its lowest measured peak.

    Peak memory noise is one-sided (a run can only hold extra allocations, never fewer
    than the configuration needs), so the lowest of repeated runs is the figure to gate.
    """
    if not repeats:
        return first
    best: dict[tuple, dict[str, Any]] = {}
    for doc in (first, *repeats):
        for r in _records(doc, "results"):
            cid, peak = config_id(r["config"]), _peak(r)
            old = best.get(cid)
            if old is None or (peak is not None and (_peak(old) is None or peak < _peak(old))):
                best[cid] = r
    records = [best[config_id(r["config"])] for r in _records(first, "results")]
    return {**first, "records": records} if isinstance(first, dict) else records


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
    fp_new, fp_old = fingerprint(results), fingerprint(baseline)
    if fp_new != fp_old:
        out.notes.append(
            f"the baseline comes from another machine kind ({fp_old or 'unrecorded'}, these "
            f"results: {fp_new or 'unrecorded'}): peaks differ by machine, so growth may be "
            "the machine's rather than the code's"
        )
    for what in ("tensorflow", "keras", "cpu"):
        a = (baseline.get("machine") or {}).get(what) if isinstance(baseline, dict) else None
        z = (results.get("machine") or {}).get(what) if isinstance(results, dict) else None
        if a and z and a != z:
            out.notes.append(f"{what} differs from the baseline's: {z!r} vs {a!r}")
    return out


def select_baseline(results: Any, folder: Path) -> tuple[Path | None, str | None]:
    """The baseline in `folder` (`*.json`) measured on the results' machine kind.

    Returns `(path, fingerprint)`; `path` is `None` when no baseline matches (or the
    results record no machine kind: `fingerprint` is then `None` too). Of several
    matches, the most recent (`date`) wins.
    """
    want = fingerprint(results)
    if want is None:
        return None, None
    found: list[tuple[str, Path]] = []
    for path in sorted(folder.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if fingerprint(doc) == want:
            found.append((str(doc.get("date", "")), path))
    return (max(found)[1] if found else None), want


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


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        print(f"{path}: cannot read results ({exc})", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument(
        "baseline", type=Path, help="a baseline file, or a folder of baselines per machine kind"
    )
    parser.add_argument("--threshold", type=float, default=THRESHOLD)
    parser.add_argument(
        "--repeat",
        type=Path,
        action="append",
        default=[],
        help="results of the same suite measured again: each configuration's lowest peak counts",
    )
    parser.add_argument(
        "--require-baseline",
        action="store_true",
        help="fail (exit 1) when the folder has no baseline for this machine kind, "
        "instead of storing one and passing",
    )
    args = parser.parse_args(argv)
    results = _read(args.results)
    repeats = [_read(path) for path in args.repeat]
    if results is None or any(r is None for r in repeats):
        return 2
    results = lowest_peaks(results, *repeats)
    baseline_path = args.baseline
    if baseline_path.is_dir():
        baseline_path, kind = select_baseline(results, args.baseline)
        if baseline_path is None:
            return _no_baseline(results, args.baseline, kind, args.require_baseline)
        print(f"baseline for machine kind {kind}: {baseline_path}")
    baseline = _read(baseline_path)
    if baseline is None:
        return 2
    try:
        c = compare(results, baseline, args.threshold)
    except (ValueError, KeyError, TypeError) as exc:
        print(f"cannot compare {args.results} with {baseline_path}: {exc}", file=sys.stderr)
        return 2
    print(render(c))
    return 0 if c.ok else 1


def _no_baseline(results: Any, folder: Path, kind: str | None, required: bool) -> int:
    """No baseline for this machine kind: store these results as one, pass unless required."""
    if kind is None:
        print(
            "FAIL: the results record no machine kind (machine.isa, machine.tensorflow): "
            "cannot pick a baseline; rerun benchmarks/run.py",
            file=sys.stderr,
        )
        return 1
    stored = folder / f"{kind}.json"
    if not required:
        from trainer.atomic import write_text

        write_text(stored, json.dumps(results, indent=2) + "\n")
    machine = results.get("machine") or {}
    print(
        f"NO BASELINE for machine kind {kind} ({machine.get('cpu') or 'unknown CPU'}, "
        f"flags {' '.join(machine.get('cpu_flags') or []) or 'unknown'}) in {folder}: "
        "nothing was gated, this run cannot catch a regression."
    )
    if required:
        print(f"FAIL: --require-baseline; commit a baseline measured on this kind as {stored}")
        return 1
    print(f"stored these results as {stored}: commit it so later runs on this kind are gated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
