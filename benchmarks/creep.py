"""Where does peak memory creep over a long run? Train one plan for many epochs per arm.

Each arm is a fresh child process running `trainer.train.fit.train` on the same plan with
one lever changed, recording after every epoch the process's peak RSS so far (`VmHWM`,
what `history.csv` records as `peak_memory_bytes`), the resident set at the end of the
epoch (`VmRSS`) and the peak within that epoch alone (`clear_refs` resets the mark at
each epoch start). The levers are the trainer's own settings (`trainer.train.memory`),
switched off in the child where an arm leaves them out:

    default     none: as fitplan trained before it had them
    arena2      malloc arenas capped at 2 (glibc: instead of 8 x cores; fewer half-empty
                arenas under TensorFlow's threads); also MALLOC_ARENA_MAX=2 in the
                environment, so the cap holds from the child's first allocation
    trim        `malloc_trim(0)` before each validation pass and after each epoch
    arena2trim  both, glibc's mmap threshold left dynamic: as fitplan trained until stop 23
    now         both, and the mmap threshold held at 8 MiB: as fitplan trains now
                (`fix_mmap_threshold`; glibc otherwise raises it to the size of each
                mapped block freed, up to 32 MiB, so that later tensors of that size come
                from the arenas and fragment them)
    mmap128k    as fitplan trains now with the threshold held at glibc's initial 128 KiB
                (lowest memory, but every tensor above it is mapped: steps much slower)
    bare        as fitplan trains now, training steps only: no validation pass, no
                checkpoint, no TensorBoard, no early stopping or schedule callbacks
                (if the creep stays, it comes from training and its input pipeline)
    noautotune  as fitplan trains now, with tf.data's autotuning off on both datasets
                (`tf.data.Options().autotune.enabled = False`): parallelism and buffer
                sizes then stay fixed
    noval       as fitplan trains now, without the validation pass (every callback kept:
                those that watch a validation figure then do nothing)
    nockpt      as fitplan trains now, without the checkpoint writes (`RunCheckpointer`)
    notb        as fitplan trains now, without the TensorBoard callback
    gc          as fitplan trains now, with Python's `gc.collect()` before each heap release
                (objects in reference cycles, e.g. of h5py's checkpoint writes, freed then)
    bfc         as fitplan trains now, with TensorFlow's own best-fit-with-coalescing
                allocator for CPU tensors (`TF_CPU_ALLOCATOR_USE_BFC=true`, read by
                tensorflow/core/common_runtime/process_state.cc; the default is malloc):
                tensors then come from regions TensorFlow keeps and reuses, not glibc's
    fixedio     as `bfc`, with tf.data's parallelism and prefetch buffers held at 2
                (`trainer.data.pipeline.AUTOTUNE` = 2) instead of autotuned

    python benchmarks/creep.py --out /tmp/creep [--epochs 10] [--max-steps 12] [--arms a,b]
    python benchmarks/creep.py --out /tmp/creep --from-plan RUN/plan.json --epochs 40

`--trace-allocator` also records, for arms with TensorFlow's BFC allocator, what the
allocator holds: the bytes of tensors in use at each epoch's end and their peak within the
epoch (`tf.config.experimental.get_memory_info("CPU:0")`, reset at each epoch start), the
regions it reserved (its own log, `TF_CPP_VMODULE=bfc_allocator=1`: "Allocated memory at A
to B"), how much of those regions is resident (`/proc/self/pagemap`), and glibc's heap
in use (`mallinfo2`). It says whether a rise comes from more tensor bytes, from
new regions, from pages of reserved regions touched for the first time, or from outside
TensorFlow's tensors.

`--from-plan` trains a plan `fitplan plan` wrote (e.g. the demo's, `fitplan-demo/run/
plan.json`) instead of the epfl-em plan the other options build: its time limit and
early stopping are taken off, so every arm trains `--epochs` epochs of `--max-steps`.

Prints one table (MiB) and writes `creep.json`. Memory figures do not depend on the
machine's load; the wall times do.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EPFL = ROOT.parent / "shared" / "datasets" / "epfl-em" / "train"
MIB = 2**20
A2 = {"MALLOC_ARENA_MAX": "2"}
K128, M8 = 128 * 1024, 8 * 2**20
ARMS = {  # arm: (environment, cap the arenas, trim, mmap threshold held or None: dynamic)
    "default": ({}, False, False, None),
    "arena2": (A2, True, False, None),
    "trim": ({}, False, True, None),
    "arena2trim": (A2, True, True, None),
    "now": (A2, True, True, M8),
    "mmap128k": (A2, True, True, K128),
    "bare": (A2, True, True, M8),
    "noautotune": (A2, True, True, M8),
    "noval": (A2, True, True, M8),
    "nockpt": (A2, True, True, M8),
    "notb": (A2, True, True, M8),
    "gc": (A2, True, True, M8),
    "bfc": ({**A2, "TF_CPU_ALLOCATOR_USE_BFC": "true"}, True, True, M8),
    "fixedio": ({**A2, "TF_CPU_ALLOCATOR_USE_BFC": "true"}, True, True, M8),
}
# The callback each "no..." arm drops (by class name); "noval" drops the validation data.
WITHOUT = {"nockpt": ("RunCheckpointer",), "notb": ("TensorBoard",), "noval": ()}
# Callbacks the "bare" arm keeps: the heap release, the throughput/peak recorder, and
# the benchmark's own recorder; the others (validation-driven or writing files) go.
BARE_KEEPS = ("ReleaseFreeHeap", "Throughput", "Record")


def _bare(keras) -> None:
    """Every `fit` trains without validation and with only the `BARE_KEEPS` callbacks."""
    fit = keras.Model.fit

    def bare_fit(self, *args, validation_data=None, callbacks=None, **kwargs):
        kept = [c for c in callbacks or [] if type(c).__name__ in BARE_KEEPS]
        return fit(self, *args, callbacks=kept, **kwargs)

    keras.Model.fit = bare_fit


def _without(keras, arm: str) -> None:
    """Every `fit` trains without what the arm leaves out (`WITHOUT`)."""
    fit = keras.Model.fit
    dropped = WITHOUT[arm]

    def partial_fit(self, *args, validation_data=None, callbacks=None, **kwargs):
        kept = [c for c in callbacks or [] if type(c).__name__ not in dropped]
        val = None if arm == "noval" else validation_data
        return fit(self, *args, validation_data=val, callbacks=kept, **kwargs)

    keras.Model.fit = partial_fit


def _no_autotune() -> None:
    """Both datasets with tf.data's autotuning off."""
    import tensorflow as tf

    from trainer.data import pipeline

    opts = tf.data.Options()
    opts.autotune.enabled = False
    for name in ("_train_dataset", "_val_dataset"):
        build = getattr(pipeline, name)
        setattr(pipeline, name, lambda *a, _b=build, **k: _b(*a, **k).with_options(opts))


def _resident(ranges: list[tuple[int, int]]) -> int:
    """Bytes of these address ranges that are resident: one bit per page in
    `/proc/self/pagemap` (bit 63, "page present"; docs: kernel.org admin-guide/mm/pagemap)."""
    import numpy as np

    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    with open("/proc/self/pagemap", "rb") as f:
        for a, b in ranges:
            f.seek(a // page * 8)
            words = np.frombuffer(f.read((b - a) // page * 8), dtype=np.uint64)
            total += int(np.count_nonzero(words >> np.uint64(63))) * page
    return total


def _malloc_in_use() -> int:
    """Bytes glibc's heap has handed out and not had back (`mallinfo2().uordblks`); 0
    where the C library has no `mallinfo2`."""
    import ctypes

    class Info(ctypes.Structure):
        _fields_ = [
            (n, ctypes.c_size_t)
            for n in (
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
            ).split()
        ]

    try:
        fn = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return 0
    fn.restype = Info
    return int(fn().uordblks)


def _regions(log: Path) -> list[tuple[float, int, int]]:
    """(time, start, end) of each region TensorFlow's BFC allocator reserved, from its
    VLOG(1) lines ("Allocated memory at 0x... to 0x...", bfc_allocator.cc `Extend`)."""
    import re

    pat = re.compile(r"^I\d+ \S+:(\d+\.\d+)\s.*Allocated memory at (0x[0-9a-f]+) to (0x[0-9a-f]+)")
    out = []
    for line in log.read_text(errors="replace").splitlines():
        m = pat.match(line)
        if m:
            out.append((float(m[1]), int(m[2], 16), int(m[3], 16)))
    return out


def child(args: argparse.Namespace) -> None:
    import keras
    import psutil

    from trainer.plan import Plan
    from trainer.train import callbacks, fit, memory
    from trainer.train.memory import peak_rss_bytes, reset_peak_rss

    _, cap, trim, mmap = ARMS[args.arm]
    if not cap:  # the trainer's own setting, off for this arm
        memory.limit_malloc_arenas = lambda *a, **k: False
    if mmap is None:  # glibc's dynamic threshold, as fitplan trained until stop 23
        memory.fix_mmap_threshold = lambda *a, **k: False
    elif mmap != memory.MMAP_THRESHOLD:
        fixed = memory.fix_mmap_threshold
        memory.fix_mmap_threshold = lambda *a, **k: fixed(mmap)
    if not trim:
        callbacks.release_free_heap = lambda: False
    if args.arm == "bare":
        _bare(keras)
    if args.arm == "noautotune":
        _no_autotune()
    if args.arm == "fixedio":
        from trainer.data import pipeline

        pipeline.AUTOTUNE = 2
    if args.arm in WITHOUT:
        _without(keras, args.arm)
    if args.arm == "gc":
        import gc

        release = callbacks.release_free_heap
        callbacks.release_free_heap = lambda: (gc.collect(), release())[1]
    process = psutil.Process()
    rows: list[dict[str, Any]] = []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.hwm_before = rows[-1]["hwm_total"] if rows else peak_rss_bytes()
            reset_peak_rss()
            if args.trace_allocator:
                memory.reset_cpu_tensor_peak()
            self.epoch_start = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            rows.append(
                {
                    "epoch": epoch + 1,
                    "hwm_epoch": peak_rss_bytes(),
                    "hwm_total": max(self.hwm_before, peak_rss_bytes()),
                    "rss_end": process.memory_info().rss,
                    "epoch_s": time.monotonic() - self.epoch_start,
                }
            )
            if args.trace_allocator:
                regions = [(a, b) for _, a, b in _regions(Path(args.out) / f"{args.arm}.log")]
                pool_rss = _resident(regions)
                rows[-1].update(
                    pool=sum(b - a for a, b in regions),
                    regions=len(regions),
                    pool_rss=pool_rss,
                    other_rss=rows[-1]["rss_end"] - pool_rss,
                    malloc_in_use=_malloc_in_use(),
                )
                stats = memory.cpu_tensor_bytes()
                if stats is not None:
                    rows[-1].update(tf_current=stats[0], tf_peak=stats[1])
            Path(args.result).write_text(json.dumps(rows))  # a stopped run keeps its epochs

    plan = Plan.from_dict(json.loads(Path(args.plan).read_text()))
    fit.train(
        plan, args.run, max_epochs=args.epochs, max_steps=args.max_steps, callbacks=[Record()]
    )
    Path(args.result).write_text(json.dumps(rows))


def make_plan_file(out: Path, side: int, mb: int, acc: int, backbone: str, data: Path) -> Path:
    plan = {
        "version": 1,
        "backbone": backbone,
        "input_size": [side, side],
        "micro_batch": mb,
        "accumulation_steps": acc,
        "epochs": 100,
        "data": {
            "path": str(data),
            "masks": "mitochondria",
            "mask_values": [0, 255],
            "val_fraction": 0.2,
            "cache": "stream",
        },
        "target": {"device": "cpu", "budget_bytes": 16 * 2**30, "budget_source": "user"},
        "prediction": {"peak_bytes": 4 * 2**30, "step_time_s": 1.0},
        "early_stopping": {"patience": 1000},
    }
    path = out / "plan.json"
    path.write_text(json.dumps(plan, indent=1))
    return path


def plan_without_limits(source: Path) -> dict[str, Any]:
    """A plan `fitplan plan` wrote, with no time limit and no early stopping."""
    plan = json.loads(source.read_text())
    plan.pop("time_limit_s", None)
    plan["early_stopping"] = {**plan.get("early_stopping", {}), "patience": 1000}
    plan["epochs"] = 100000
    return plan


def copy_plan_file(out: Path, source: Path) -> Path:
    """`plan_without_limits(source)`, written to `out/plan.json` for the arms."""
    path = out / "plan.json"
    path.write_text(json.dumps(plan_without_limits(source), indent=1))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--max-steps", type=int, default=12)
    ap.add_argument("--side", type=int, default=256)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--accumulation", type=int, default=2)
    ap.add_argument("--backbone", default="mobilenet_v3_small")
    ap.add_argument(
        "--data", type=Path, default=EPFL, help="epfl-em train root (default: ../shared)"
    )
    ap.add_argument("--from-plan", type=Path, help="train this plan.json instead (see above)")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument(
        "--parallel",
        action="store_true",
        help="run the arms side by side (memory is per process; times are not comparable)",
    )
    ap.add_argument(
        "--trace-allocator",
        action="store_true",
        help="record TensorFlow's BFC pool, its tensors and glibc's heap per epoch (see above)",
    )
    ap.add_argument("--arm", help=argparse.SUPPRESS)
    ap.add_argument("--plan", help=argparse.SUPPRESS)
    ap.add_argument("--run", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.arm:
        child(args)
        return
    args.out = args.out.resolve()  # the children run in the repository root
    args.out.mkdir(parents=True, exist_ok=True)
    if args.from_plan:
        plan = copy_plan_file(args.out, args.from_plan)
    else:
        plan = make_plan_file(
            args.out, args.side, args.micro_batch, args.accumulation, args.backbone, args.data
        )
    results: dict[str, Any] = {}
    procs = {}
    for arm in args.arms.split(","):
        env = dict(os.environ, **ARMS[arm][0])
        if args.trace_allocator:
            env["TF_CPP_VMODULE"] = "bfc_allocator=1"
        cmd = [
            sys.executable,
            __file__,
            "--out",
            str(args.out),
            "--arm",
            arm,
            "--plan",
            str(plan),
            "--run",
            str(args.out / f"run-{arm}"),
            "--result",
            str(args.out / f"{arm}.json"),
            "--epochs",
            str(args.epochs),
            "--max-steps",
            str(args.max_steps),
        ]
        if args.trace_allocator:
            cmd.append("--trace-allocator")
        log = open(args.out / f"{arm}.log", "w")  # noqa: SIM115 - closed with the child
        procs[arm] = (
            subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=log),
            time.monotonic(),
            log,
        )
        if not args.parallel:
            procs[arm][0].wait()
    for arm, (proc, t0, log) in procs.items():
        proc.wait()
        log.close()
        if proc.returncode != 0:
            print(
                f"{arm}: exit {proc.returncode}, see {args.out / (arm + '.log')}", file=sys.stderr
            )
            continue
        rows = json.loads((args.out / f"{arm}.json").read_text())
        results[arm] = {"rows": rows, "wall_s": time.monotonic() - t0}
        hwm = [r["hwm_total"] / MIB for r in rows]
        ep = [r["hwm_epoch"] / MIB for r in rows]
        rss = [r["rss_end"] / MIB for r in rows]
        print(f"{arm:11s} peak so far: " + " ".join(f"{v:5.0f}" for v in hwm))
        print(f"{'':11s} epoch peak:  " + " ".join(f"{v:5.0f}" for v in ep))
        print(f"{'':11s} rss at end:  " + " ".join(f"{v:5.0f}" for v in rss), flush=True)
        if args.trace_allocator and any("tf_peak" in r for r in rows):
            for key, label in (
                ("tf_peak", "tensors peak"),
                ("tf_current", "tensors end "),
                ("pool", "BFC pool    "),
                ("pool_rss", "pool rss    "),
                ("other_rss", "other rss   "),
                ("malloc_in_use", "malloc used "),
            ):
                vals = [r.get(key, 0) for r in rows]
                print(f"{'':11s} {label}: " + " ".join(f"{v / MIB:5.0f}" for v in vals))
    (args.out / "creep.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
