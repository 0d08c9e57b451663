"""Run a benchmark suite: `python benchmarks/run.py --suite ci|full|... --out DIR`.

Writes `DIR/results.json` (see docs/benchmarks.md for every field) and, when the suite
measures peak memory, `DIR/peak_memory.png`. Prints what it measures as it goes.
Compare the results with a baseline with `benchmarks/compare.py`.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks`, `planner`, `trainer` importable
    sys.path.insert(0, str(ROOT))

from benchmarks import extras, peak_memory  # noqa: E402
from benchmarks.fingerprint import ONEDNN_FLAGS, cpu_flags, isa_level  # noqa: E402
from benchmarks.suites import SUITES, Suite  # noqa: E402
from trainer.atomic import write_text  # noqa: E402

SCHEMA = 1
MIB = 2**20


def machine() -> dict[str, Any]:
    """What ran the benchmark: peaks differ with the CPU's instruction set and TF version.

    `isa` (oneDNN's dispatch level) and `cpu_flags` (the flags that decide it) are what
    `benchmarks/compare.py` picks a baseline by (`benchmarks.fingerprint`).
    """
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor()

    def version(pkg: str) -> str | None:
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return None

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = ""
    flags = cpu_flags()
    return {
        "cpu": cpu,
        "isa": isa_level(flags),
        "cpu_flags": [f for f in ONEDNN_FLAGS if f in flags],
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "tensorflow": version("tensorflow"),
        "keras": version("keras"),
        "git_commit": commit or None,
    }


def run_suite(suite: Suite, *, device: str, epfl: Path, log=print) -> dict[str, Any]:
    """Run every part of `suite`; returns the results document (not yet written)."""
    started = time.time()
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "suite": suite.description,
        "device": device,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "threads": {
            k: os.environ.get(k) for k in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")
        },
        "load_average_start": list(os.getloadavg()),
        "records": [],
    }
    if suite.memory is not None:
        m = suite.memory
        base = peak_memory.measure_baseline_rss(device)
        doc["baseline_rss"] = base
        if base.get("bytes"):
            log(f"baseline (Python + TF, one op): {base['bytes'] / MIB:.0f} MiB")
        records = peak_memory.run_matrix(m, base.get("bytes"), device=device, log=log)
        doc["records"] = records
        doc["prediction_error"] = peak_memory.prediction_error(records)
        doc["method"] = {
            "peak_bytes": (
                "peak RSS of the trial child during one micro-batch size alone (Linux VmHWM, "
                "reset through /proc/self/clear_refs before each size; a 10 ms RSS poll where "
                "that is refused: see each record's peak_source)"
                if device == "cpu"
                else "TF allocator peak (get_memory_info('GPU:0')['peak'], reset per size)"
            ),
            "step_time_s": f"median of {m.measured_steps} train_on_batch steps after "
            f"{m.warmup_steps} warm-up steps (the first traces)",
            "children": "per (backbone, input size, precision): one fresh planner trial child "
            f"per fit size (planner.trials.trial.measure_each, default target) {list(m.fit_micro_batches)} "
            "ascending, as the planner's trial; one fresh child (planner.trials.trial.measure_one) per "
            f"larger size {list(m.check_micro_batches)}, as the planner's verification",
            "inputs": "synthetic float32 images in [0, 1] and class-index masks, 2 classes",
            "predicted_peak_bytes": "line through the peaks of the two smallest micro-batches "
            "(planner.search.memory_model.fit_line), evaluated at each larger size; null for the two "
            "fitted sizes (a line through a point predicts it trivially)",
        }
        err = doc["prediction_error"]
        if err["n"]:
            log(
                f"prediction error over {err['n']} configurations: median {err['median']:.1%}, "
                f"max {err['max']:.1%} ({err['worst']})"
            )
    if suite.pipeline is not None:
        doc["pipeline"] = extras.run_pipeline(suite.pipeline, epfl=epfl, device=device, log=log)
    if suite.accumulation is not None:
        doc["accumulation"] = extras.run_accumulation(suite.accumulation, device=device, log=log)
    if suite.streaming is not None:
        doc["streaming"] = extras.run_streaming(suite.streaming, device=device, log=log)
    doc["load_average_end"] = list(os.getloadavg())
    doc["wall_s"] = round(time.time() - started, 1)
    return doc


def write_plot(doc: dict[str, Any], path: Path) -> bool:
    """Plot the peaks to `path`; the plot is optional: without matplotlib, say so and skip."""
    try:
        import matplotlib  # noqa: F401  (plot_peaks imports it lazily: fail here, not there)

        from benchmarks.plot import plot_peaks
    except ImportError as exc:
        print(f"no plot: matplotlib is not installed ({exc}); results.json is complete")
        return False
    plot_peaks(doc["records"], path, doc.get("baseline_rss", {}).get("bytes"))
    print(f"wrote {path}")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=sorted(SUITES), default="ci")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="TF intra- and inter-op threads in the children (default 2, as on the machine "
        "the committed baseline comes from, so a bigger CI runner measures alike; 0: TF's default)",
    )
    parser.add_argument("--epfl", type=Path, default=extras.EPFL, help="epfl-em dataset root")
    args = parser.parse_args(argv)
    if args.threads > 0:
        # Children inherit the environment (planner.trials.trial copies os.environ).
        os.environ["TF_NUM_INTRAOP_THREADS"] = str(args.threads)
        os.environ["TF_NUM_INTEROP_THREADS"] = str(args.threads)
    suite = SUITES[args.suite]
    print(f"suite {args.suite}: {suite.description}", flush=True)
    doc = run_suite(suite, device=args.device, epfl=args.epfl, log=lambda s: print(s, flush=True))
    doc["suite_name"] = args.suite
    out = args.out
    write_text(out / "results.json", json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out / 'results.json'} ({doc['wall_s']:.0f} s)")
    if doc["records"]:
        write_plot(doc, out / "peak_memory.png")
    failed = [r["key"] for r in doc["records"] if r["status"] != "ok"]
    if failed:
        print(f"{len(failed)} configurations failed: {', '.join(failed)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
