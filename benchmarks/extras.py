"""Input-pipeline throughput, accumulation overhead and streaming memory (parent side).

Each runs its target from `benchmarks/targets.py` inside the planner's trial child
(`planner.trials.trial.run_trial`) and returns a JSON-ready dict with the figure, how it was
measured and, where the issue sets one, the aim.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.suites import AccumulationBench, PipelineBench, StreamingBench
from benchmarks.synthetic import link_subset, write_pairs
from planner.trials.trial import TrialSpec, run_trial

Log = Callable[[str], None]
EPFL = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "epfl-em"
PIPELINE_AIM = 0.95
ACCUMULATION_AIM = 1.05
STREAMING_AIM = 0.10
MIB = 2**20
_PIPELINE_KEYS = (
    "disk_images_per_s",
    "memory_images_per_s",
    "ratio",
    "disk_images_per_cpu_s",
    "memory_images_per_cpu_s",
    "cpu_ratio",
    "rounds",
)
_ACCUMULATION_KEYS = (
    "per_image_s_with",
    "per_image_s_without",
    "ratio",
    "cpu_per_image_s_with",
    "cpu_per_image_s_without",
    "cpu_ratio",
    "blocks",
)


def _target(name: str) -> str:
    return f"benchmarks.targets:{name}"


def _failed(r: Any) -> dict[str, Any]:
    return {"status": r.status, "reason": r.reason}


def run_pipeline(
    bench: PipelineBench, *, epfl: Path = EPFL, device: str = "cpu", log: Log = print
) -> dict[str, Any]:
    """Training images/s from disk vs from memory; epfl-em, or a synthetic set without it."""
    tmp = None
    if (epfl / "train" / "images").is_dir():
        data = {"path": str(epfl / "train"), "masks": "mitochondria", "val_fraction": 0.0}
        source = f"epfl-em train ({epfl})"
    else:
        log(f"epfl-em not found at {epfl}: using 27 synthetic 768x1024-like pairs instead")
        tmp = Path(tempfile.mkdtemp(prefix="fitplan-bench-pipeline-"))
        write_pairs(tmp, 27, 768)
        data = {"path": str(tmp), "val_fraction": 0.0}
        source = "synthetic: 27 grey 768x768 PNG pairs (epfl-em absent)"
    data.update(cache="stream", mask_values=[0, 255])
    spec = TrialSpec(
        bench.backbone,
        (bench.side, bench.side),
        (bench.micro_batch,),
        device=device,
        target=_target("pipeline"),
        target_args={"data": data, "steps": bench.steps, "rounds": bench.rounds},
    )
    log(f"pipeline: {bench.backbone} {bench.side}x{bench.side} mb {bench.micro_batch}, {source}")
    try:
        r = run_trial(spec, timeout_s=bench.timeout_s)[-1]
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if not r.ok:
        return _failed(r)
    d = r.details
    log(
        f"  disk {d['disk_images_per_s']:.2f} img/s, memory {d['memory_images_per_s']:.2f} img/s, "
        f"ratio {d['ratio']:.3f} (aim >= {PIPELINE_AIM}); per CPU second: ratio {d['cpu_ratio']:.3f}"
    )
    return {
        "status": "ok",
        "config": {
            "backbone": bench.backbone,
            "input_size": [bench.side, bench.side],
            "micro_batch": bench.micro_batch,
            "precision": "float32",
        },
        "dataset": source,
        **{k: d[k] for k in _PIPELINE_KEYS},
        "aim": f"ratio >= {PIPELINE_AIM}",
        "meets_aim": d["ratio"] >= PIPELINE_AIM,
        "how": "one child; the same compiled model trained with model.fit from "
        "trainer.data.pipeline.build_datasets (stream: PNG decode + augment) and from 4 of its "
        f"batches held in memory, alternating, {bench.rounds} rounds of {bench.steps} "
        "timed steps after 2 untimed; median images/s of each source, per wall second "
        "(ratio) and per CPU second of the child, all threads (cpu_ratio: robust to other "
        "jobs on a shared machine)",
    }


def run_accumulation(
    bench: AccumulationBench, *, device: str = "cpu", log: Log = print
) -> dict[str, Any]:
    """Time per image at micro-batch m with k accumulation steps against without."""
    spec = TrialSpec(
        bench.backbone,
        (bench.side, bench.side),
        (bench.micro_batch,),
        accumulation_steps=bench.accumulation_steps,
        device=device,
        target=_target("accumulation"),
        target_args={"cycles": bench.cycles, "rounds": 2},
    )
    m, k = bench.micro_batch, bench.accumulation_steps
    log(f"accumulation: {bench.backbone} {bench.side}x{bench.side} micro-batch {m}, k={k} vs 1")
    r = run_trial(spec, timeout_s=bench.timeout_s)[-1]
    if not r.ok:
        return _failed(r)
    d = r.details
    log(
        f"  {d['per_image_s_with'] * 1000:.1f} ms/image with, {d['per_image_s_without'] * 1000:.1f} "
        f"without: ratio {d['ratio']:.3f} (aim <= {ACCUMULATION_AIM}); CPU time ratio {d['cpu_ratio']:.3f}"
    )
    return {
        "status": "ok",
        "config": {
            "backbone": bench.backbone,
            "input_size": [bench.side, bench.side],
            "micro_batch": m,
            "accumulation_steps": k,
            "precision": "float32",
        },
        **{k_: d[k_] for k_ in _ACCUMULATION_KEYS},
        "aim": f"ratio <= {ACCUMULATION_AIM}",
        "meets_aim": d["ratio"] <= ACCUMULATION_AIM,
        "how": "one child, one model recompiled with the optimizer's "
        "gradient_accumulation_steps=1 and =k in turn (2 rounds); each block "
        f"{bench.cycles} whole cycles of k train_on_batch calls after one untimed cycle; "
        "median seconds per image of each, wall (ratio) and CPU of the child (cpu_ratio)",
    }


def run_streaming(
    bench: StreamingBench, *, device: str = "cpu", log: Log = print
) -> dict[str, Any]:
    """Peak RSS of one streamed epoch over N, 2N, 4N, 8N synthetic pairs, a fresh child each."""
    n_max = bench.base_pairs * max(bench.multiples)
    tmp = Path(tempfile.mkdtemp(prefix="fitplan-bench-stream-"))
    rows: list[dict[str, Any]] = []
    try:
        log(f"streaming: writing {n_max} synthetic {bench.image_side}px pairs to {tmp}")
        write_pairs(tmp / "all", n_max, bench.image_side)
        for mult in bench.multiples:
            n = bench.base_pairs * mult
            root = link_subset(tmp / "all", tmp / f"n{n}", n)
            data = {
                "path": str(root),
                "val_fraction": 0.0,
                "cache": "stream",
                "mask_values": [0, 255],
            }
            spec = TrialSpec(
                "unet_small",
                (bench.crop_side, bench.crop_side),
                (bench.micro_batch,),
                device=device,
                target=_target("stream_epoch"),
                target_args={"data": data},
            )
            r = run_trial(spec, timeout_s=bench.timeout_s)[-1]
            if not r.ok:
                rows.append({"pairs": n, **_failed(r)})
                log(f"  {n} pairs: {r.status} ({r.reason})")
                continue
            d = r.details
            rows.append(
                {
                    "pairs": n,
                    "status": "ok",
                    "peak_bytes": r.peak_bytes,
                    "rss_before_epoch_bytes": d["rss_before_epoch_bytes"],
                    "crops": d["crops"],
                    "epoch_s": d["epoch_s"],
                }
            )
            log(
                f"  {n} pairs ({d['crops']} crops): peak {r.peak_bytes / MIB:.0f} MiB, {d['epoch_s']:.1f} s"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "status": "ok",
        **streaming_verdict(rows),
        "rows": rows,
        "how": _STREAM_HOW.format(b=bench),
    }


_STREAM_HOW = (
    "each size in a fresh trial child: trainer.data.pipeline.build_datasets(cache='stream') over "
    "{b.image_side}x{b.image_side} grey PNG pairs ({b.crop_side}px crops, micro-batch "
    "{b.micro_batch}, no model), then VmHWM reset and one epoch iterated; peak_bytes is the "
    "peak RSS during the epoch; files in a temporary folder, removed afterwards"
)


def streaming_verdict(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Growth of the largest size's peak over the smallest's, against the 10% aim."""
    ok = [r for r in rows if r.get("status") == "ok"]
    if len(ok) < 2:
        return {"growth": None, "meets_aim": False, "aim": f"growth <= {STREAMING_AIM:.0%}"}
    small, large = min(ok, key=lambda r: r["pairs"]), max(ok, key=lambda r: r["pairs"])
    growth = (large["peak_bytes"] - small["peak_bytes"]) / small["peak_bytes"]
    return {
        "growth": round(growth, 4),
        "growth_pairs": [small["pairs"], large["pairs"]],
        "meets_aim": growth <= STREAMING_AIM,
        "aim": f"growth <= {STREAMING_AIM:.0%}",
    }
