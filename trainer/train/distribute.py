"""Several devices and hosts with `tf.distribute`: the plan's strategy, its chief, its data.

fitplan has no distribution layer of its own. A plan names a strategy and a replica
count; this module turns them into a `tf.distribute.Strategy`, checks that the
machine agrees with the plan, and answers the questions training asks of it:

- which worker writes the run folder (`is_chief`, `worker_dir`): only the chief; the
  others write the same files to a temporary folder that is removed, as Keras'
  multi-worker guide recommends (a save may read values every worker must take part in);
- how the input is split (`shard_datasets`): each worker keeps its share of every
  global batch (`AutoShardPolicy.DATA`), so the union of the replicas' micro-batches is
  exactly the batch a single device would have seen;
- which learning rate the larger global batch gets (`learning_rate_for`), by the rule
  the plan records in `optimizer.lr_scaling`.

See docs/distributed.md for launching on several hosts.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import tensorflow as tf

from trainer.errors import HardwareError
from trainer.plan import Plan
from trainer.train.callbacks import TimeLimit

__all__ = [
    "AgreedTimeLimit",
    "get_strategy",
    "is_chief",
    "learning_rate_for",
    "shard_datasets",
    "strategy_for_run",
    "tf_config",
    "time_limit_for",
    "worker_dir",
]

# One strategy per (kind, replicas) and process: MultiWorkerMirroredStrategy configures
# collective ops for the whole process and cannot be created twice.
_STRATEGIES: dict[tuple[str, int], tf.distribute.Strategy] = {}


def tf_config(env: dict[str, str] | None = None) -> dict[str, Any] | None:
    """The parsed `TF_CONFIG` (cluster and this task), or `None` when it is unset.

    Args:
        env: environment to read. Defaults to `None`: `os.environ`.

    Raises:
        HardwareError: `TF_CONFIG` is set but is not a JSON object with `cluster`
            and `task` (TensorFlow's own message would be an opaque parse error).
    """
    raw = (os.environ if env is None else env).get("TF_CONFIG")
    if not raw:
        return None
    try:
        conf = json.loads(raw)
    except ValueError as exc:
        raise HardwareError(
            f"TF_CONFIG is not valid JSON ({exc}). Received: {raw[:200]!r}"
        ) from exc
    task = conf.get("task") if isinstance(conf, dict) else None
    if not isinstance(conf.get("cluster") if task else None, dict) or not isinstance(task, dict):
        raise HardwareError(
            f"TF_CONFIG must be an object with `cluster` and `task`. Received: {raw[:200]!r}",
            hint='e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
            '"task": {"type": "worker", "index": 0}}',
        )
    return conf


def get_strategy(plan: Plan) -> tf.distribute.Strategy:
    """The plan's strategy, created once per process and checked against the plan.

    Call it before any other TensorFlow work in the process: a
    `MultiWorkerMirroredStrategy` must configure collective ops before TensorFlow
    initialises its devices.

    - `"default"`: `tf.distribute.get_strategy()`, the one-device default.
    - `"mirrored"`: `MirroredStrategy` over the first `replicas` visible GPUs (in
      `CUDA_VISIBLE_DEVICES` order); on a machine without GPUs, over its logical CPU
      devices (tests split the CPU with `tf.config.set_logical_device_configuration`).
    - `"multi_worker"`: `MultiWorkerMirroredStrategy` from `TF_CONFIG` (no `TF_CONFIG`:
      this process is the only worker), every local GPU (or the CPU) of every worker.

    Raises:
        HardwareError: the machine or cluster does not offer `plan.replicas` replicas.
    """
    key = (plan.strategy, plan.replicas)
    if plan.strategy == "default":
        strategy = tf.distribute.get_strategy()  # not cached: it depends on the scope
    else:
        if key not in _STRATEGIES:
            _STRATEGIES[key] = _make_strategy(plan)
        strategy = _STRATEGIES[key]
    if strategy.num_replicas_in_sync != plan.replicas:
        workers = _num_workers(strategy)
        raise HardwareError(
            f"plan field `replicas` must match the {plan.strategy} strategy's "
            f"{strategy.num_replicas_in_sync} replicas ({workers} worker(s) x "
            f"{strategy.num_replicas_in_sync // workers} device(s)). Received: replicas={plan.replicas}",
            hint="edit `replicas` (the micro-batch is per replica) or the workers in TF_CONFIG",
        )
    return strategy


def _make_strategy(plan: Plan) -> tf.distribute.Strategy:
    if plan.strategy == "multi_worker":
        from trainer.train.distribute_keras import patch_multi_worker_logs

        tf_config()  # a readable message for a malformed TF_CONFIG
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        patch_multi_worker_logs()  # keras-team/keras#20585
        return strategy
    gpus = tf.config.list_logical_devices("GPU")
    pool = gpus or tf.config.list_logical_devices("CPU")
    if len(pool) < plan.replicas:
        kind = "GPU" if gpus else "CPU (no GPU visible)"
        raise HardwareError(
            f"plan field `replicas` asks for {plan.replicas} devices but TensorFlow sees "
            f"{len(pool)} {kind}. Received: replicas={plan.replicas}",
            hint="lower `replicas`, or check CUDA_VISIBLE_DEVICES and `fitplan probe`",
        )
    return tf.distribute.MirroredStrategy([d.name for d in pool[: plan.replicas]])


def strategy_for_run(run_path: str | os.PathLike) -> tf.distribute.Strategy:
    """The strategy of the run folder's plan (for `resume`); default when it has none.

    A folder without a readable plan gets the default strategy, so that resuming it
    fails with the run folder's own error rather than here.
    """
    from trainer.plan import load_plan

    plan_path = Path(run_path) / "plan.json"
    if not plan_path.is_file():
        return tf.distribute.get_strategy()
    return get_strategy(load_plan(plan_path))


def _num_workers(strategy: tf.distribute.Strategy) -> int:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1
    cluster = resolver.cluster_spec().as_dict()
    return max(1, len(cluster.get("worker", [])) + len(cluster.get("chief", [])))


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run folder: the `chief` task, else worker 0.

    Every single-process strategy is its own chief.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if task_type is None or task_type == "chief":
        return True
    cluster = resolver.cluster_spec().as_dict()
    return task_type == "worker" and resolver.task_id == 0 and "chief" not in cluster


@contextlib.contextmanager
def worker_dir(
    out: str | os.PathLike, strategy: tf.distribute.Strategy, *, resume: bool = False
) -> Iterator[Path]:
    """The folder this worker writes its run to: `out` for the chief, else a temporary one.

    A non-chief worker runs every callback the chief runs (a checkpoint may read
    values all workers must help compute), into a temporary folder that is removed
    on exit, so only the chief's files ever appear in `out`.

    Args:
        out: the run folder.
        strategy: the strategy this process trains under.
        resume: copy what resuming reads from `out` (plan, state, history, the
            weights that state names) into the temporary folder. `out` must then be
            readable by every worker at the same path (a shared file system).
    """
    if is_chief(strategy):
        yield Path(out)
        return
    tmp = Path(tempfile.mkdtemp(prefix="fitplan-worker-"))
    try:
        run = tmp / "run"
        if resume:
            _copy_resume_files(Path(out), run)
        yield run
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _copy_resume_files(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True)
    names = ["plan.json", "state.json", "history.csv", "best.weights.h5"]
    state_path = src / "state.json"
    if state_path.is_file():
        with contextlib.suppress(OSError, ValueError):
            names.append(str(json.loads(state_path.read_text(encoding="utf-8"))["last_weights"]))
    for name in names:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)


def shard_datasets(bundle: Any) -> Any:
    """`bundle` (a `trainer.data.pipeline.DataBundle`) with its datasets sharded by element.

    Our pipeline reads files through a shuffled index, not one file per shard, so
    file-based sharding cannot apply; `DATA` lets each worker run the whole
    (deterministic) pipeline and keep its share of every global batch. Decoding is
    far faster than training here (300 pairs/s on 2 cores, MEASURED.md), so reading
    every file on every worker costs little. No effect without a distribution strategy.
    """
    import dataclasses

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    val = bundle.val.with_options(options) if bundle.val is not None else None
    return dataclasses.replace(bundle, train=bundle.train.with_options(options), val=val)


# -- decisions every worker must share ----------------------------------------------------


class AgreedTimeLimit(TimeLimit):
    """`TimeLimit` for several workers: all of them stop after the same step.

    Each worker reads its own clock, so one could pass the deadline a step before
    another and leave `fit` while the other waits for it in a collective, forever. The
    decision is the all-reduced sum of the workers' flags instead (one scalar per step;
    early stopping and the plateau schedule need nothing: they read all-reduced logs).
    """

    def __init__(self, deadline: float | None, strategy: tf.distribute.Strategy, **kwargs):
        super().__init__(deadline, **kwargs)
        self.strategy = strategy

    def _check(self):
        if self.deadline is None:  # the same on every worker: the plan's time limit
            return
        past = tf.constant(1.0 if self.past() else 0.0)  # each worker's own clock and reserve
        if float(self.strategy.reduce("SUM", past, axis=None)) > 0:
            self.triggered = True
            self.model.stop_training = True


def time_limit_for(
    deadline: float | None, *, accumulation_steps: int = 1, val_batches: int = 0
) -> TimeLimit:
    """`TimeLimit`, agreed across workers when the current strategy has several."""
    strategy = tf.distribute.get_strategy()
    kw = {"accumulation_steps": accumulation_steps, "val_batches": val_batches}
    if _num_workers(strategy) > 1:
        return AgreedTimeLimit(deadline, strategy, **kw)
    return TimeLimit(deadline, **kw)


# -- the learning rate for a larger global batch ------------------------------------------


def learning_rate_for(plan: Plan) -> float:
    """The initial learning rate for the plan's effective batch, by `optimizer.lr_scaling`.

    - `"none"`: `optimizer.learning_rate` as written (it is already meant for the
      effective batch).
    - `"linear"`: times `effective_batch / reference_batch` (Goyal et al. 2017, for SGD).
    - `"sqrt"`: times `sqrt(effective_batch / reference_batch)` (the square-root rule
      suited to Adam-type optimizers, Malladi et al. 2022).
    """
    spec = plan.optimizer
    if spec.lr_scaling == "none" or spec.reference_batch is None:
        return spec.learning_rate
    ratio = plan.effective_batch / spec.reference_batch
    return spec.learning_rate * (ratio if spec.lr_scaling == "linear" else math.sqrt(ratio))
