"""Step time and weights of data-parallel training against one device, on this machine.

    python benchmarks/distributed.py --out DIR [--rounds 2] [--images 32] [--size 64]

Three arms, each a child process running `tests/trainer/distribute_worker.py` on the same
synthetic set and plan (unet_small, crops = whole images, no augmentation, SGD, global
batch 4 x 2 accumulation steps, 2 epochs):

- **one**: one process, default strategy, micro-batch 4;
- **mirrored**: one process, `MirroredStrategy` over 2 logical CPU devices, micro-batch 2
  per replica;
- **workers**: 2 processes on 127.0.0.1, `MultiWorkerMirroredStrategy`, micro-batch 2 each;
- **split**: one process, default strategy, micro-batch 2 x 4 accumulation steps: the same
  global batch split like the replicas split it, to tell rounding from distribution.

The arms run one after another, `--rounds` times in turn, so a change in the machine's
load hits every arm. The step time is the median over every training step but the first
of each `fit` (it traces). Writes `DIR/distributed.json` with the step times, the ratios to
**one**, the largest weight difference to **one** and the load average before each run.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    # gRPC between the workers must not go through a proxy; no stray TF_CONFIG either.
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and k != "TF_CONFIG"}
    env.update(no_proxy="127.0.0.1,localhost", TF_CPP_MIN_LOG_LEVEL="2", **(extra or {}))
    return env


def _spawn(spec: dict, path: Path, env: dict[str, str]) -> subprocess.Popen:
    path.write_text(json.dumps(spec))
    log = open(path.with_suffix(".log"), "w")  # noqa: SIM115 - closed with the process
    cmd = [sys.executable, "-m", "tests.trainer.distribute_worker", str(path)]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait(procs: list[subprocess.Popen], timeout_s: float = 1800) -> None:
    for p in procs:
        if p.wait(timeout=timeout_s) != 0:
            raise SystemExit(f"a child failed (exit {p.returncode}); see the .log files")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _run_arm(arm: str, k: int, out: Path, data: Path, plan: dict) -> dict:
    d = out / f"{arm}-{k}"
    d.mkdir(parents=True)
    load = os.getloadavg()[0]
    run = {"name": arm, "out": str(d / "run"), "plan": dict(plan)}
    if arm in ("one", "split"):
        if arm == "split":
            run["plan"].update(micro_batch=2, accumulation_steps=4)
        spec = {"data": str(data), "result": str(d / "r.json"), "runs": [run]}
        _wait([_spawn(spec, d / "spec.json", _env())])
    elif arm == "mirrored":
        run["plan"].update(strategy="mirrored", replicas=2, micro_batch=2)
        spec = {"data": str(data), "result": str(d / "r.json"), "runs": [run], "logical_cpus": 2}
        _wait([_spawn(spec, d / "spec.json", _env())])
    else:
        run["plan"].update(strategy="multi_worker", replicas=2, micro_batch=2)
        cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
        procs = []
        for i in range(2):
            r = dict(run, out=str(d / "run"))
            name = "r.json" if i == 0 else f"r{i}.json"
            spec = {"data": str(data), "result": str(d / name), "runs": [r]}
            tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
            procs.append(_spawn(spec, d / f"spec{i}.json", _env({"TF_CONFIG": tf_config})))
        _wait(procs)
    result = json.loads((d / "r.json").read_text())[arm]
    with np.load(d / f"{arm}.npz") as f:
        weights = [f[f"arr_{i}"] for i in range(len(f.files))]
    return {"load_before": load, "step_times": result["step_times"], "weights": weights}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from planner.app.demo import make_demo_dataset

    args.out.mkdir(parents=True, exist_ok=False)
    data = args.out / "data"
    hw = (args.size, args.size)
    make_demo_dataset(data / "train", n=args.images, size=hw, seed=1)
    make_demo_dataset(data / "val", n=2, size=hw, seed=2)
    # Frozen BatchNorm: trained, it normalises each replica's micro-batch on its own
    # (not synchronised), which is not what this compares (docs/distributed.md).
    plan = {"input_size": list(hw), "epochs": 2, "normalization": "frozen"}
    arms = ("one", "mirrored", "workers", "split")
    runs: dict[str, list[dict]] = {a: [] for a in arms}
    t0 = time.monotonic()
    for k in range(args.rounds):
        for arm in arms:
            runs[arm].append(_run_arm(arm, k, args.out, data, plan))
            print(f"round {k} {arm}: median step {np.median(runs[arm][-1]['step_times']):.3f} s")
    ref = runs["one"][0]["weights"]
    summary = {"plan": plan, "images": args.images, "wall_s": round(time.monotonic() - t0, 1)}
    one_step = float(np.median([t for r in runs["one"] for t in r["step_times"]]))
    for arm in arms:
        steps = [t for r in runs[arm] for t in r["step_times"]]
        diff = max(
            float(np.abs(a - b).max())
            for r in runs[arm]
            for a, b in zip(ref, r["weights"], strict=True)
        )
        summary[arm] = {
            "median_step_s": round(float(np.median(steps)), 4),
            "ratio_to_one": round(float(np.median(steps)) / one_step, 2),
            "steps_timed": len(steps),
            "max_abs_weight_diff_to_one": diff,
            "load_before": [round(r["load_before"], 1) for r in runs[arm]],
        }
    (args.out / "distributed.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
