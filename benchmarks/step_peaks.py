"""Each training step's peak of tensor bytes over a plan's epochs: how much it varies.

A long run's host peak on the CPU rises over its verification run's because the resident
part of TensorFlow's BFC pool follows the highest tensor peak of any step so far, and that
peak differs from step to step (docs/runs.md, "Where a long run's rise comes from"). This
trains a plan (`fitplan train`'s own `trainer.train.fit.train`, no time limit or early
stopping) for `--epochs` epochs and records, for every train and validation batch, the
tensor bytes in use when it starts and the peak within it (TensorFlow's CPU allocator
statistics, `trainer.train.memory.cpu_tensor_bytes`, reset at each batch). Options switch
off the suspects one at a time:

    --fixed-io N   tf.data's parallelism and prefetch held at N instead of autotuned
    --inter-op N   TensorFlow's inter-op thread pool at N threads (the executor's order)
    --one-batch    the first training batch again at every step (no pipeline work)

    python benchmarks/step_peaks.py --plan plan.json --out DIR [--epochs 3] [options]

Prints per epoch and kind the minimum, median and maximum step peak (MiB) and writes
`DIR/steps.json`. Memory figures do not depend on the machine's load; concurrent jobs
may change which steps coincide with pipeline work.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (epoch, kind): batches, min / median / max step peak, and the batch that set it."""
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["epoch"], r["kind"]), []).append(r)
    out = []
    for (epoch, kind), rs in sorted(groups.items()):
        peaks = sorted(r["peak"] for r in rs)
        top = max(rs, key=lambda r: r["peak"])
        out.append(
            {
                "epoch": epoch,
                "kind": kind,
                "batches": len(rs),
                "min": peaks[0],
                "median": peaks[len(peaks) // 2],
                "max": peaks[-1],
                "max_batch": top["batch"],
                "in_use_before_max": top["before"],
            }
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plan", type=Path, required=True, help="a plan.json `fitplan plan` wrote")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--fixed-io", type=int, help="tf.data parallelism and prefetch (no autotune)")
    ap.add_argument("--inter-op", type=int, help="TensorFlow inter-op threads")
    ap.add_argument("--one-batch", action="store_true", help="train on the first batch only")
    args = ap.parse_args()

    from trainer.train import memory

    memory.configure_malloc()  # as `fitplan train`: glibc settings, TensorFlow's BFC
    import keras
    import tensorflow as tf

    from benchmarks.creep import plan_without_limits
    from trainer.data import pipeline
    from trainer.plan import Plan
    from trainer.train import fit

    if args.inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op)
    if args.fixed_io:
        pipeline.AUTOTUNE = args.fixed_io
    if args.one_batch:
        build = pipeline._train_dataset

        def one_batch(*a, **k):
            steps = a[4]
            ds = build(*a, **k).take(1).cache().repeat().take(steps)
            return ds.apply(tf.data.experimental.assert_cardinality(steps))

        pipeline._train_dataset = one_batch

    plan = Plan.from_dict(plan_without_limits(args.plan))
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []

    class Record(keras.callbacks.Callback):
        epoch = 0
        before = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch + 1

        def _begin(self):
            stats = memory.cpu_tensor_bytes()
            self.before = stats[0] if stats else 0
            memory.reset_cpu_tensor_peak()

        def _end(self, kind, batch):
            stats = memory.cpu_tensor_bytes() or (0, 0)
            rows.append(
                {
                    "epoch": self.epoch,
                    "kind": kind,
                    "batch": batch,
                    "before": self.before,
                    "peak": stats[1],
                    "after": stats[0],
                    "time": time.time(),
                }
            )

        def on_train_batch_begin(self, batch, logs=None):
            self._begin()

        def on_train_batch_end(self, batch, logs=None):
            self._end("train", batch)

        def on_test_batch_begin(self, batch, logs=None):
            self._begin()

        def on_test_batch_end(self, batch, logs=None):
            self._end("val", batch)

        def on_epoch_end(self, epoch, logs=None):
            (args.out / "steps.json").write_text(json.dumps(rows))

    fit.train(plan, args.out / "run", max_epochs=args.epochs, callbacks=[Record()])
    (args.out / "steps.json").write_text(json.dumps(rows))
    print("epoch kind  batches  step peak MiB: min  median  max  (batch, in use before)")
    for s in summarize(rows):
        print(
            f"{s['epoch']:5d} {s['kind']:5s} {s['batches']:7d}  {s['min'] / MIB:18.0f} "
            f"{s['median'] / MIB:7.0f} {s['max'] / MIB:5.0f}  "
            f"({s['max_batch']}, {s['in_use_before_max'] / MIB:.0f})"
        )


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
