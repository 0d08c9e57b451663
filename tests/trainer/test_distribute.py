"""tf.distribute: strategy from the plan, chief-only writes, LR rule; real training in children.

The two training tests run `tests/trainer/distribute_worker.py` in child processes
(logical CPU devices and MultiWorkerMirroredStrategy must be set up before TensorFlow
starts) and compare final weights with a one-device run of the same global batch.
Tolerance: 1e-5 absolute on every weight, where training moves weights by more than
1e-3 (checked); measured differences were 3e-8 to 6e-8 (float summation order). The
comparison uses SGD: see `distribute_worker.base_plan` and docs/distributed.md for why
not Adam.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tests.plans import minimal_plan as _plan
from trainer.errors import HardwareError, PlanError

REPO = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-5
TIMEOUT_S = 900  # a hung collective fails the test instead of hanging the suite


# -- learning-rate rule -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "expected"),
    [("none", 1e-3), ("linear", 4e-3), ("sqrt", 2e-3)],
)
def test_learning_rate_follows_the_plans_rule(rule, expected):
    from trainer.train.distribute import learning_rate_for

    opt = {"learning_rate": 1e-3, "lr_scaling": rule}
    if rule != "none":
        opt["reference_batch"] = 16
    # effective batch 64 = 4 per replica x 4 replicas x 4 accumulation steps
    plan = _plan(
        micro_batch=4, replicas=4, strategy="mirrored", accumulation_steps=4, optimizer=opt
    )
    assert plan.effective_batch == 64
    assert learning_rate_for(plan) == pytest.approx(expected)


def test_scaling_without_reference_batch_is_refused():
    with pytest.raises(PlanError, match="optimizer.reference_batch"):
        _plan(optimizer={"lr_scaling": "linear"})
    with pytest.raises(PlanError, match="optimizer.lr_scaling"):
        _plan(optimizer={"lr_scaling": "cubic", "reference_batch": 8})


# -- cluster, chief, worker folders -----------------------------------------------------


@pytest.mark.parametrize(
    "raw", ["{not json", '{"cluster": {"worker": ["a:1"]}}', '["worker"]', '{"task": {}}']
)
def test_malformed_tf_config_names_the_variable(raw):
    from trainer.train.distribute import tf_config

    with pytest.raises(HardwareError, match="TF_CONFIG"):
        tf_config({"TF_CONFIG": raw})


def test_tf_config_parses_cluster_and_task():
    from trainer.train.distribute import tf_config

    conf = {"cluster": {"worker": ["h1:1", "h2:1"]}, "task": {"type": "worker", "index": 1}}
    assert tf_config({"TF_CONFIG": json.dumps(conf)}) == conf
    assert tf_config({}) is None


def _fake_strategy(task_type, task_id, cluster):
    spec = SimpleNamespace(as_dict=lambda: cluster)
    resolver = SimpleNamespace(task_type=task_type, task_id=task_id, cluster_spec=lambda: spec)
    return SimpleNamespace(cluster_resolver=resolver)


@pytest.mark.parametrize(
    ("task_type", "task_id", "cluster", "chief"),
    [
        (None, None, {}, True),
        ("worker", 0, {"worker": ["a:1", "b:1"]}, True),
        ("worker", 1, {"worker": ["a:1", "b:1"]}, False),
        ("chief", 0, {"chief": ["c:1"], "worker": ["a:1"]}, True),
        ("worker", 0, {"chief": ["c:1"], "worker": ["a:1"]}, False),
    ],
)
def test_is_chief(task_type, task_id, cluster, chief):
    from trainer.train.distribute import is_chief

    assert is_chief(_fake_strategy(task_type, task_id, cluster)) is chief


def test_chief_writes_out_and_other_workers_a_removed_temp_folder(tmp_path, monkeypatch):
    from trainer.train.distribute import worker_dir

    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    out = tmp_path / "run"
    with worker_dir(out, _fake_strategy("worker", 0, {"worker": ["a:1", "b:1"]})) as folder:
        assert folder == out
    with worker_dir(out, _fake_strategy("worker", 1, {"worker": ["a:1", "b:1"]})) as folder:
        assert folder != out and str(folder).startswith(str(tmp_path / "tmp"))
        folder.mkdir()
        (folder / "metrics.json").write_text("{}")
    assert not out.exists()
    assert list((tmp_path / "tmp").iterdir()) == []


def test_non_chief_resume_copies_what_state_names(tmp_path):
    from trainer.train.distribute import worker_dir

    out = tmp_path / "run"
    out.mkdir()
    for name in ("plan.json", "history.csv", "best.weights.h5", "last-e0002.weights.h5"):
        (out / name).write_text(name)
    (out / "state.json").write_text(json.dumps({"last_weights": "last-e0002.weights.h5"}))
    (out / "last-e0001.weights.h5").write_text("stale")
    worker1 = _fake_strategy("worker", 1, {"worker": ["a:1", "b:1"]})
    with worker_dir(out, worker1, resume=True) as folder:
        copied = sorted(p.name for p in folder.iterdir())
    assert copied == [
        "best.weights.h5",
        "history.csv",
        "last-e0002.weights.h5",
        "plan.json",
        "state.json",
    ]
    assert not folder.exists()
    assert (out / "last-e0001.weights.h5").exists()  # the chief's folder is untouched


# -- strategies in this process -----------------------------------------------------------


def test_default_strategy_and_unchanged_optimizer_class():
    import keras
    import tensorflow as tf

    from trainer.train.distribute import get_strategy
    from trainer.train.distribute_keras import for_current_strategy

    assert get_strategy(_plan()) is tf.distribute.get_strategy()
    assert for_current_strategy(keras.optimizers.Adam) is keras.optimizers.Adam


def test_more_replicas_than_devices_is_refused():
    import tensorflow as tf

    from trainer.train.distribute import get_strategy

    n = len(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU"))
    with pytest.raises(HardwareError, match="replicas"):
        get_strategy(_plan(strategy="mirrored", replicas=n + 1))


def test_mirrored_strategy_on_one_device_uses_the_safe_optimizer():
    import keras

    from trainer.train.distribute import get_strategy
    from trainer.train.distribute_keras import DistributedAccumulation
    from trainer.train.setup import make_optimizer

    plan = _plan(strategy="mirrored", replicas=1, accumulation_steps=2)
    strategy = get_strategy(plan)
    assert strategy.num_replicas_in_sync == 1
    with strategy.scope():
        opt = make_optimizer(plan)
    assert isinstance(opt, DistributedAccumulation) and isinstance(opt, keras.optimizers.Adam)
    assert opt.gradient_accumulation_steps == 2


def test_datasets_are_sharded_by_element():
    import dataclasses

    import tensorflow as tf

    from trainer.train.distribute import shard_datasets

    @dataclasses.dataclass
    class Bundle:
        train: tf.data.Dataset
        val: tf.data.Dataset | None

    out = shard_datasets(Bundle(tf.data.Dataset.range(4), tf.data.Dataset.range(2)))
    data = tf.data.experimental.AutoShardPolicy.DATA
    assert out.train.options().experimental_distribute.auto_shard_policy == data
    assert out.val.options().experimental_distribute.auto_shard_policy == data


# -- real training in child processes -------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from planner.app.demo import make_demo_dataset

    root = tmp_path_factory.mktemp("dist")
    make_demo_dataset(root / "train", n=8, size=(32, 32), seed=1)
    make_demo_dataset(root / "val", n=2, size=(32, 32), seed=2)
    return root


def _child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("http_proxy", "https_proxy", "grpc_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env.pop(key, None)  # gRPC between workers on 127.0.0.1 must not go through a proxy
    env["no_proxy"] = env["NO_PROXY"] = "127.0.0.1,localhost"
    env.pop("TF_CONFIG", None)
    env.update(extra or {})
    return env


def _spawn(spec: dict, path: Path, env: dict[str, str]) -> subprocess.Popen:
    path.write_text(json.dumps(spec))
    log = open(path.with_suffix(".log"), "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "tests.trainer.distribute_worker", str(path)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _wait_all(procs: list[subprocess.Popen], specs: list[Path]) -> None:
    try:
        for p in procs:
            p.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"training children did not finish in {TIMEOUT_S} s:\n{_tails(specs)}")
    if any(p.returncode != 0 for p in procs):
        pytest.fail(f"a training child failed:\n{_tails(specs)}")


def _tails(specs: list[Path]) -> str:
    return "\n".join(f"--- {s.name}\n" + s.with_suffix(".log").read_text()[-3000:] for s in specs)


def _weights(path: Path) -> list[np.ndarray]:
    with np.load(path) as f:
        return [f[f"arr_{i}"] for i in range(len(f.files))]


def _max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    assert [x.shape for x in a] == [y.shape for y in b]
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data) -> SimpleNamespace:
    """One child, two runs of global batch 4 x 2 accumulation steps each.

    The default strategy (one device, micro-batch 4: the reference of both tests) and
    MirroredStrategy over 2 logical CPUs (micro-batch 2 per replica). One child rather
    than one per run, as each child costs a TensorFlow start; the default strategy
    runs on one device whatever the logical split.
    """
    root = tmp_path_factory.mktemp("reference")
    spec = {
        "data": str(data),
        "result": str(root / "result.json"),
        "logical_cpus": 2,
        "runs": [
            {"name": "ref", "out": str(root / "ref"), "plan": {}},
            {
                "name": "two",
                "out": str(root / "two"),
                "plan": {"strategy": "mirrored", "replicas": 2, "micro_batch": 2},
            },
        ],
        "save_init": True,
    }
    specs = [root / "spec.json"]
    _wait_all([_spawn(spec, specs[0], _child_env())], specs)
    weights = _weights(root / "ref.npz")
    moved = _max_diff(weights, _weights(root / "init.npz"))
    assert moved > 100 * TOLERANCE  # training moved the weights: the comparisons can fail
    results = json.loads((root / "result.json").read_text())
    return SimpleNamespace(
        weights=weights,
        moved=moved,
        mirrored=SimpleNamespace(weights=_weights(root / "two.npz"), result=results["two"]),
    )


@pytest.mark.slow
def test_mirrored_two_devices_match_one_device(reference):
    result = reference.mirrored.result
    assert result["metrics"]["replicas"] == 2 and result["metrics"]["epochs"] == 3
    diff = _max_diff(reference.weights, reference.mirrored.weights)
    print(
        f"\nmirrored, 2 logical CPUs vs 1 device: max |dw| = {diff:.2e} (training moved "
        f"weights by up to {reference.moved:.2e})"
    )
    assert diff < TOLERANCE


@pytest.mark.slow
def test_two_workers_match_one_process_and_only_the_chief_writes(tmp_path, data, reference):
    # Two workers, one CPU replica each: micro-batch 2 per replica, same global batch.
    # Interrupted after epoch 2 and resumed: the resumed run must still match.
    out = tmp_path / "run"
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs, specs = [], []
    for i in range(2):
        spec = {
            "data": str(data),
            "result": str(tmp_path / f"w{i}.json"),
            "runs": [
                {
                    "name": f"w{i}",
                    "out": str(out),
                    # A time limit that never fires: the workers still agree on it every step.
                    "plan": {
                        "strategy": "multi_worker",
                        "replicas": 2,
                        "micro_batch": 2,
                        "time_limit_s": 3600,
                    },
                    "interrupt_after": 2,
                }
            ],
        }
        tmp = tmp_path / f"tmp{i}"
        tmp.mkdir()
        task = {"cluster": cluster, "task": {"type": "worker", "index": i}}
        env = _child_env({"TF_CONFIG": json.dumps(task), "TMPDIR": str(tmp)})
        specs.append(tmp_path / f"w{i}-spec.json")
        procs.append(_spawn(spec, specs[-1], env))
    _wait_all(procs, specs)

    w0, w1 = _weights(tmp_path / "w0.npz"), _weights(tmp_path / "w1.npz")
    assert _max_diff(w0, w1) == 0.0  # replicas stay in sync
    diff = _max_diff(reference.weights, w0)
    print(
        f"\n2 workers vs 1 process: max |dw| = {diff:.2e} (training moved weights by up to "
        f"{reference.moved:.2e})"
    )
    assert diff < TOLERANCE

    # Only the chief wrote: one complete run in `out`, the other worker's temp folder gone.
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "best.weights.h5",
        "history.csv",
        "last-e0003.weights.h5",
        "metrics.json",
        "plan.json",
        "state.json",
        "tensorboard",
        "train.log",
    ]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and metrics["replicas"] == 2
    assert metrics["strategy"] == "multi_worker"
    assert list((tmp_path / "tmp1").iterdir()) == []


def test_agreed_time_limit_stops_when_any_worker_is_past_the_deadline():
    import time

    import tensorflow as tf

    from trainer.train.distribute import AgreedTimeLimit

    class TwoWorkers:  # the other worker is past its deadline; this one is not
        def reduce(self, op, value, axis):
            assert op == "SUM" and axis is None
            return value + tf.constant(1.0)

    model = SimpleNamespace(stop_training=False)
    cb = AgreedTimeLimit(time.monotonic() + 3600, TwoWorkers())
    cb.set_model(model)
    cb.on_train_batch_end(0)
    assert cb.triggered and model.stop_training

    class Nobody(TwoWorkers):
        def reduce(self, op, value, axis):
            return value

    model = SimpleNamespace(stop_training=False)
    cb = AgreedTimeLimit(time.monotonic() + 3600, Nobody())
    cb.set_model(model)
    cb.on_train_batch_end(0)
    assert not cb.triggered and not model.stop_training


def test_one_process_keeps_the_plain_time_limit():
    from trainer.train.callbacks import TimeLimit
    from trainer.train.distribute import AgreedTimeLimit, time_limit_for

    cb = time_limit_for(None)
    assert type(cb) is TimeLimit and not isinstance(cb, AgreedTimeLimit)
