"""The GPU path, checked on a real GPU: one PASS/FAIL line with its figures per check.

    python benchmarks/gpu_check.py [--out /tmp/gpu-check] [--gpu UUID] [--json]
    python benchmarks/gpu_check.py --dry-run     # any machine: lists the checks, runs none

At most about 5 minutes on one modern GPU (each check has its own time limit; most of
the time is TensorFlow starting in the children). Exit status 0 when every check passed,
1 otherwise, 2 without a usable GPU. docs/gpu.md says what each line means. The parent
process never imports TensorFlow: everything that touches the GPU runs in a child, as in
fitplan itself, so the parent's own view (NVML, nvidia-smi) is not disturbed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]  # fitplan from this checkout, whatever the working directory

MIB = 2**20
TOLERANCE_BUDGET = 256 * MIB  # probe budget vs TensorFlow's allocator limit
TOLERANCE_LINE = 0.05  # the trial line's error at micro-batch 16
TOLERANCE_RUN = 0.05  # a training run's peak vs the plan's prediction
TOLERANCE_SMI = 64 * MIB  # nvidia-smi's used memory back to where it started
HOG_SHARE = 0.25  # the share of the card another process holds during the training check


@dataclass
class Check:
    name: str
    what: str
    run: Callable[[Context], tuple[bool, dict[str, Any]]]


@dataclass
class Context:
    out: Path
    uuid: str
    env: dict[str, str]
    figures: dict[str, Any] = field(default_factory=dict)


# -- helpers --------------------------------------------------------------------------


def _python(code: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def _smi_used(uuid: str) -> int | None:
    """nvidia-smi's used memory of the GPU (bytes), or None without nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return None
    out = subprocess.run(
        ["nvidia-smi", "-i", uuid, "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    text = out.stdout.strip().splitlines()
    return int(float(text[0])) * MIB if out.returncode == 0 and text else None


def _fitplan(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "planner", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def _dataset(ctx: Context) -> Path:
    from planner.app.demo import make_demo_dataset

    path = ctx.out / "data"
    if not (path / "images").is_dir():
        make_demo_dataset(path, n=48, size=(256, 256))
    return path


def _last_json(stdout: str) -> dict[str, Any]:
    """The last JSON object `fitplan ... --json` printed (it starts on a line of its own)."""
    start = 0 if stdout.startswith("{") else stdout.rindex("\n{") + 1
    return json.loads(stdout[start:])


def _mib(value: float | None) -> str:
    return "?" if value is None else f"{value / MIB:.0f} MiB"


# -- the checks -----------------------------------------------------------------------


def check_budget(ctx: Context) -> tuple[bool, dict[str, Any]]:
    """The probe's budget against the limit TensorFlow's allocator really got."""
    from planner import hardware

    report = hardware.probe(ctx.out, with_tensorflow=False, env=ctx.env)
    budget = report["budget"]
    code = (
        "import tensorflow as tf\n"
        "tf.config.list_logical_devices('GPU')\n"  # creates the device: TF logs its limit
        "print('LIMIT', tf.config.experimental.get_memory_info('GPU:0'))\n"
    )
    env = {**ctx.env, "TF_CPP_MIN_LOG_LEVEL": "0"}
    proc = _python(code, env, 180)
    limit = None
    for line in proc.stderr.splitlines():  # "Created device ... with 38012 MB memory"
        if " MB memory" in line and "Created device" in line:
            limit = int(line.split(" MB memory")[0].rsplit(" ", 1)[-1]) * MIB
    if limit is None or budget["device"] != "gpu":
        return False, {"budget": budget["bytes"], "tf_limit": None, "stderr": proc.stderr[-300:]}
    diff = abs(budget["bytes"] - limit)
    return diff <= TOLERANCE_BUDGET, {
        "budget": _mib(budget["bytes"]),
        "tf_limit": _mib(limit),
        "difference": _mib(diff),
        "tolerance": _mib(TOLERANCE_BUDGET),
    }


def check_trial_line(ctx: Context) -> tuple[bool, dict[str, Any]]:
    """Trial peaks at micro-batch 1, 4 and 16, each in a fresh child; the line's error at 16."""
    from planner.search.memory_model import fit_line
    from planner.trials.spec import TrialSpec
    from planner.trials.trial import measure_each

    spec = TrialSpec(
        "mobilenet_v3_small", (256, 256), (1, 4, 16), precision=_precision(ctx), device="gpu"
    )
    results = measure_each(spec, timeout_s=180)
    peaks = {r.micro_batch: r.peak_bytes for r in results if r.ok}
    if set(peaks) != {1, 4, 16}:
        return False, {"results": [f"{r.micro_batch}: {r.status} {r.reason}" for r in results]}
    line = fit_line([(1, peaks[1]), (4, peaks[4])])
    error = (line.predict(16) - peaks[16]) / peaks[16]
    ctx.figures["trial_peaks"] = peaks
    return abs(error) <= TOLERANCE_LINE, {
        "peaks": {k: _mib(v) for k, v in peaks.items()},
        "predicted_16": _mib(line.predict(16)),
        "error_16": f"{error:+.1%}",
    }


def check_training_under_load(ctx: Context) -> tuple[bool, dict[str, Any]]:
    """Plan and train 30 steps while another process holds part of the card."""
    data = _dataset(ctx)
    free = _free_bytes(ctx.uuid)
    hog_bytes = int((free or 0) * HOG_SHARE)
    hog = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, tensorflow as tf\n"
            # Its own limit, or TensorFlow would map the whole card (docs/gpu.md).
            "gpu = tf.config.list_physical_devices('GPU')[0]\n"
            f"cfg = tf.config.LogicalDeviceConfiguration(memory_limit={hog_bytes // MIB})\n"
            "tf.config.set_logical_device_configuration(gpu, [cfg])\n"
            f"x = tf.ones([{max(hog_bytes - 256 * MIB, MIB) // 4}], tf.float32)\n"
            "print('holding', flush=True)\n"
            "time.sleep(600)\n",
        ],
        env=ctx.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        hog.stdout.readline()  # the other job holds its memory now
        plan_path, run = ctx.out / "load-plan.json", ctx.out / "load-run"
        shutil.rmtree(run, ignore_errors=True)
        planned = _fitplan(
            ["plan", str(data), "--out", str(plan_path), "--sizes", "256"], ctx.env, 240
        )
        if planned.returncode != 0:
            return False, {"plan": planned.stderr.strip()[-300:]}
        trained = _fitplan(
            ["train", "--plan", str(plan_path), "--out", str(run), "--max-epochs", "1",
             "--max-steps", "30", "--json"],
            ctx.env,
            240,
        )  # fmt: skip
    finally:
        hog.kill()
        hog.wait()
    if trained.returncode != 0:
        return False, {"train": trained.stderr.strip()[-300:]}
    metrics = _last_json(trained.stdout)
    plan = json.loads(plan_path.read_text())
    peak, predicted = metrics["peak_memory_bytes"], plan["prediction"]["peak_bytes"]
    budget = plan["target"]["budget_bytes"]
    error = (predicted - peak) / peak
    return abs(error) <= TOLERANCE_RUN and peak <= budget, {
        "other_process": _mib(hog_bytes),
        "peak": _mib(peak),
        "predicted": _mib(predicted),
        "error": f"{error:+.1%}",
        "budget": _mib(budget),
    }


def check_oom_forms(ctx: Context) -> tuple[bool, dict[str, Any]]:
    """A real GPU OOM (a trial under a 512 MiB limit) and each known text form: all OOM."""
    from planner.trials.spec import TrialSpec
    from planner.trials.trial import run_trial
    from trainer.oom import is_oom_error

    spec = TrialSpec("efficientnet_b0", (512, 512), (32,), device="gpu")
    real = run_trial(spec, timeout_s=180, memory_limit_bytes=512 * MIB)[-1]
    forms = [
        "Failed to get convolution algorithm. This is probably because cuDNN failed to initialize",
        "Could not create cudnn handle: CUDNN_STATUS_ALLOC_FAILED",
        "could not create cudnn handle: CUDNN_STATUS_NOT_INITIALIZED",
        "Dst tensor is not initialized.",
        "OOM when allocating tensor with shape[32,512,512,32]",
        "CUDA_ERROR_OUT_OF_MEMORY: out of memory",
    ]
    missed = [f for f in forms if not is_oom_error(f)]
    return real.status == "oom" and not missed, {
        "real": f"{real.status}: {real.reason[:120]}",
        "text_forms": f"{len(forms) - len(missed)}/{len(forms)}",
    }


def check_step_down(ctx: Context) -> tuple[bool, dict[str, Any]]:
    """A plan too large for its budget: training steps down in a fresh process, same batch."""
    data = _dataset(ctx)
    plan = {
        "version": 1,
        "backbone": "efficientnet_b0",
        "input_size": [256, 256],
        "micro_batch": 32,
        "accumulation_steps": 1,
        "precision": _precision(ctx),
        "data": {"path": str(data)},
        "epochs": 1,
        "steps_per_epoch": 2,
        "target": {"device": "gpu", "budget_bytes": 1536 * MIB, "device_uuids": [ctx.uuid]},
    }
    plan_path, run = ctx.out / "stepdown-plan.json", ctx.out / "stepdown-run"
    shutil.rmtree(run, ignore_errors=True)
    plan_path.write_text(json.dumps(plan))
    proc = _fitplan(["train", "--plan", str(plan_path), "--out", str(run), "--json"], ctx.env, 300)
    if proc.returncode != 0:
        return False, {"exit": proc.returncode, "stderr": proc.stderr.strip()[-300:]}
    metrics = _last_json(proc.stdout)
    kept = metrics["micro_batch"] * metrics["accumulation_steps"] == 32
    steps = [a["micro_batch"] for a in metrics["adjustments"]]
    return bool(steps) and kept, {
        "steps": steps,
        "final": f"{metrics['micro_batch']} x {metrics['accumulation_steps']}",
        "peak": _mib(metrics["peak_memory_bytes"]),
    }


def check_smi_back(ctx: Context) -> tuple[bool, dict[str, Any]]:
    """nvidia-smi's used memory is back at its starting figure (nothing left behind)."""
    time.sleep(2)
    start, now = ctx.figures.get("smi_start"), _smi_used(ctx.uuid)
    if start is None or now is None:
        return False, {"start": _mib(start), "now": _mib(now), "note": "nvidia-smi unavailable"}
    return abs(now - start) <= TOLERANCE_SMI, {"start": _mib(start), "now": _mib(now)}


def _precision(ctx: Context) -> str:
    """The policy fitplan would plan for this GPU (by its compute capability)."""
    if "precision" not in ctx.figures:
        from planner import hardware

        report = hardware.probe(ctx.out, with_tensorflow=False, env=ctx.env)
        ctx.figures["precision"] = report["precision_advice"]["policy"]
    return ctx.figures["precision"]


def _free_bytes(uuid: str) -> int | None:
    from trainer.train.device import nvml_memory

    mem = nvml_memory(uuid)
    return None if mem is None else mem["free"]


CHECKS = [
    Check("budget", "probe budget vs TensorFlow's allocator limit (within 256 MiB)", check_budget),
    Check("trial_line", "trial peaks at micro-batch 1, 4, 16; line error at 16 <= 5%", check_trial_line),
    Check("training", "30-step run within 5% of its prediction, under budget, card shared", check_training_under_load),
    Check("oom_forms", "a real GPU OOM and each known GPU OOM text classified as OOM", check_oom_forms),
    Check("step_down", "forced step-down in a fresh process keeps the effective batch", check_step_down),
    Check("smi_back", "nvidia-smi used memory back to its starting figure", check_smi_back),
]  # fmt: skip


# -- main ------------------------------------------------------------------------------


def _choose_gpu(wanted: str | None) -> str | None:
    from trainer.train.device import process_uuids

    uuids = process_uuids() or []
    if wanted:
        return next((u for u in uuids if u.startswith(wanted)), None)
    return uuids[0] if uuids else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/fitplan-gpu-check"))
    ap.add_argument("--gpu", help="UUID (or prefix) of the GPU to check; default: CUDA's first")
    ap.add_argument("--only", help="comma-separated check names")
    ap.add_argument("--json", action="store_true", help="also print the results as JSON")
    ap.add_argument("--dry-run", action="store_true", help="list the checks; run nothing")
    args = ap.parse_args(argv)
    checks = [c for c in CHECKS if not args.only or c.name in args.only.split(",")]
    if args.dry_run:
        for c in checks:
            print(f"CHECK {c.name}: {c.what}")
        print(f"dry run: {len(checks)} checks listed, none run (no GPU needed)")
        return 0
    uuid = _choose_gpu(args.gpu)
    if uuid is None:
        print("FAIL setup: no NVIDIA GPU found through NVML (pip install -e '.[gpu]'?)")
        return 2
    from trainer.train.device import pin_env

    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.update(pin_env([uuid]))  # trial children inherit it (this process has no TF)
    ctx = Context(args.out, uuid, dict(os.environ))
    ctx.figures["smi_start"] = _smi_used(uuid)
    print(f"GPU {uuid}; output in {args.out}")
    results = []
    for c in checks:
        t0 = time.monotonic()
        try:
            ok, figures = c.run(ctx)
        except Exception as exc:  # noqa: BLE001 - a crashed check is a FAIL with its reason
            ok, figures = False, {"error": f"{type(exc).__name__}: {exc}"[:300]}
        seconds = round(time.monotonic() - t0, 1)
        shown = ", ".join(f"{k}={v}" for k, v in figures.items())
        print(f"{'PASS' if ok else 'FAIL'} {c.name} ({seconds} s): {shown}", flush=True)
        results.append({"check": c.name, "pass": ok, "seconds": seconds, **figures})
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    return 0 if all(r["pass"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
