"""Child-side benchmark targets, run inside the planner's own trial child.

Each function here is a `TrialSpec.target` (`"benchmarks.targets:NAME"`): the parent
calls `planner.trials.trial.run_trial`, which starts `python -m planner.trials.child`; that child
resets the peak-RSS mark, enforces the time limit through its parent, and runs the
target with `(spec, ctx)`. So every benchmark reuses the planner's one measuring child
(peak RSS via `VmHWM` after `clear_refs`, or a 10 ms poll) instead of a second one. The
peak-memory matrix needs no target at all: it runs the planner's default
`planner.trials.child:measure`. Results travel back as `TrialResult`s; figures that do
not fit its fields go in `details`.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

from planner.trials.spec import TrialResult, TrialSpec


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def baseline_rss(spec: TrialSpec, ctx: Any) -> None:
    """RSS of the interpreter alone, after importing TF + Keras + the trainer, and after one op.

    The last figure (`peak_bytes`) is the baseline the memory matrix's peaks contain:
    TensorFlow's thread pools and allocator exist only once an op has run.
    """
    mb = spec.micro_batches[0]
    ctx.start(mb)
    python_rss = _rss()
    t0 = time.perf_counter()
    import keras  # noqa: F401 - importing is what is measured
    import tensorflow as tf

    import trainer.train.setup  # noqa: F401 - the measuring child imports it too

    import_rss, import_s = _rss(), time.perf_counter() - t0
    tf.reduce_sum(tf.ones((8, 8))).numpy()  # starts the runtime: devices, thread pools
    runtime_rss = _rss()
    host = ctx.host_peak()
    ctx.result(
        TrialResult(
            status="ok",
            micro_batch=mb,
            peak_bytes=runtime_rss,
            details={
                "python_rss_bytes": python_rss,
                "import_rss_bytes": import_rss,
                "runtime_rss_bytes": runtime_rss,
                "child_peak_bytes": host["peak_bytes"],
                "peak_source": host["peak_source"],
                "import_time_s": round(import_s, 3),
                "tensorflow": tf.__version__,
            },
        )
    )


def _plan(spec: TrialSpec, data: dict[str, Any] | None = None, **changes: Any) -> Any:
    """The minimal plan of `spec`, with a real dataset section when given."""
    plan = spec.to_plan()
    if data is not None:
        from trainer.plan import Plan

        raw = plan.to_dict()
        raw["data"] = data
        raw.update(changes)
        plan = Plan.from_dict(raw)
    return plan


def _cpu_s() -> float:
    """CPU seconds of this process, all threads (tf.data's workers included)."""
    t = os.times()
    return t.user + t.system


def _rates(model: Any, ds: Any, steps: int, warm: int, batch: int) -> tuple[float, float]:
    """(images per wall second, images per CPU second) of one `fit` epoch after `warm` batches.

    CPU seconds matter on a shared machine: other jobs stretch wall time, but the
    work this process does per image, pipeline threads included, stays the same.
    """
    import keras

    marks: list[tuple[float, float]] = []
    clock = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda b, logs: marks.append((time.perf_counter(), _cpu_s()))
    )
    model.fit(ds, epochs=1, steps_per_epoch=warm + steps, verbose=0, callbacks=[clock])
    (w0, c0), (w1, c1) = marks[warm - 1], marks[-1]
    return steps * batch / (w1 - w0), steps * batch / (c1 - c0)


def pipeline(spec: TrialSpec, ctx: Any) -> None:
    """Images/s training from disk through `trainer.data.pipeline` vs the same batches held in memory.

    Both sources feed the same compiled model through `model.fit`, alternating
    (memory, disk) for `rounds` rounds; each timed epoch skips its first 2 batches
    (iterator start-up) and counts the rest.
    """
    import numpy as np
    import tensorflow as tf

    from trainer.data.pipeline import build_datasets
    from trainer.train.setup import build_model_for_plan

    args = spec.target_args
    mb = spec.micro_batches[0]
    plan = _plan(spec, args["data"])
    steps, rounds, warm = int(args["steps"]), int(args["rounds"]), 2
    model = build_model_for_plan(plan, 2)
    bundle = build_datasets(plan)
    disk = bundle.train.repeat()
    # Distinct real batches, so the in-memory source has the same shapes and values.
    batches = list(disk.take(4).as_numpy_iterator())
    xs = np.stack([b[0] for b in batches])
    ys = np.stack([b[1] for b in batches])
    memory = tf.data.Dataset.from_tensor_slices((xs, ys)).repeat().prefetch(tf.data.AUTOTUNE)
    ctx.emit("ready", device=spec.device)
    ctx.start(mb)
    ctx.reset_peak()
    model.fit(memory, epochs=1, steps_per_epoch=warm, verbose=0)  # traces the train step
    rates: dict[str, list[tuple[float, float]]] = {"memory": [], "disk": []}
    for _ in range(rounds):
        for name, ds in (("memory", memory), ("disk", disk)):
            rates[name].append(_rates(model, ds, steps, warm, mb))
    wall = {k: statistics.median(v[0] for v in vs) for k, vs in rates.items()}
    cpu = {k: statistics.median(v[1] for v in vs) for k, vs in rates.items()}
    host = ctx.host_peak()
    ctx.result(
        TrialResult(
            status="ok",
            micro_batch=mb,
            peak_bytes=host["peak_bytes"],
            step_time_s=mb / wall["disk"],
            details={
                "memory_images_per_s": round(wall["memory"], 3),
                "disk_images_per_s": round(wall["disk"], 3),
                "ratio": round(wall["disk"] / wall["memory"], 4),
                "memory_images_per_cpu_s": round(cpu["memory"], 3),
                "disk_images_per_cpu_s": round(cpu["disk"], 3),
                "cpu_ratio": round(cpu["disk"] / cpu["memory"], 4),
                "rounds": {
                    k: [[round(w, 3), round(c, 3)] for w, c in vs] for k, vs in rates.items()
                },
                "train_pairs": len(bundle.train_pairs),
                "crops_per_image": bundle.crops_per_image,
                "peak_source": host["peak_source"],
            },
        )
    )


def accumulation(spec: TrialSpec, ctx: Any) -> None:
    """Time per image at micro-batch m with and without k-step gradient accumulation.

    One model in one child, recompiled with each optimizer in turn (without, with,
    without, with, ...), so both variants see the same load; each timed block is
    `cycles` whole accumulation cycles of `train_on_batch`, after one untimed cycle
    (the recompile retraces). A mean over whole cycles, not a median: with
    accumulation only every k-th step applies the update.
    """
    import numpy as np

    from trainer.train.setup import build_model_for_plan, compile_model

    args = spec.target_args
    mb, k = spec.micro_batches[0], spec.accumulation_steps
    cycles, rounds = int(args["cycles"]), int(args.get("rounds", 2))
    plans = {1: _plan(spec).replace(accumulation_steps=1), k: _plan(spec)}
    model = build_model_for_plan(plans[1], spec.num_classes, compile=False)
    rng = np.random.default_rng(spec.seed)
    h, w = spec.input_size
    x = rng.random((mb, h, w, 3), dtype=np.float32)
    y = rng.integers(0, spec.num_classes, size=(mb, h, w, 1)).astype(np.float32)
    ctx.emit("ready", device=spec.device)
    ctx.start(mb)
    wall: dict[int, list[float]] = {1: [], k: []}
    cpu: dict[int, list[float]] = {1: [], k: []}
    n = cycles * k * mb
    for _ in range(rounds):
        for steps_k in (1, k):
            compile_model(model, plans[steps_k], spec.num_classes)
            for _ in range(k):
                model.train_on_batch(x, y)
            t, c = time.perf_counter(), _cpu_s()
            for _ in range(cycles * k):
                model.train_on_batch(x, y)
            wall[steps_k].append((time.perf_counter() - t) / n)
            cpu[steps_k].append((_cpu_s() - c) / n)
    w1, wk = statistics.median(wall[1]), statistics.median(wall[k])
    c1, ck = statistics.median(cpu[1]), statistics.median(cpu[k])
    ctx.result(
        TrialResult(
            status="ok",
            micro_batch=mb,
            peak_bytes=ctx.host_peak()["peak_bytes"],
            step_time_s=wk * mb,
            details={
                "per_image_s_without": round(w1, 5),
                "per_image_s_with": round(wk, 5),
                "ratio": round(wk / w1, 4),
                "cpu_per_image_s_without": round(c1, 5),
                "cpu_per_image_s_with": round(ck, 5),
                "cpu_ratio": round(ck / c1, 4),
                "blocks": {
                    str(kk): [
                        [round(a, 5), round(b, 5)] for a, b in zip(wall[kk], cpu[kk], strict=True)
                    ]
                    for kk in (1, k)
                },
            },
        )
    )


def stream_epoch(spec: TrialSpec, ctx: Any) -> None:
    """Peak RSS while streaming one training epoch of `trainer.data.pipeline` (no model)."""
    from trainer.data.pipeline import build_datasets

    args = spec.target_args
    mb = spec.micro_batches[0]
    plan = _plan(spec, args["data"])
    ctx.start(mb)
    bundle = build_datasets(plan)
    ctx.reset_peak()
    before = _rss()
    t = time.perf_counter()
    images = 0
    for x, _ in bundle.train:
        images += int(x.shape[0])
    elapsed = time.perf_counter() - t
    host = ctx.host_peak()
    ctx.result(
        TrialResult(
            status="ok",
            micro_batch=mb,
            peak_bytes=host["peak_bytes"],
            step_time_s=elapsed / max(1, bundle.steps_per_epoch),
            details={
                "rss_before_epoch_bytes": before,
                "pairs": len(bundle.train_pairs),
                "crops": images,
                "epoch_s": round(elapsed, 3),
                "peak_source": host["peak_source"],
            },
        )
    )
