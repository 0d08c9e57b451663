"""Loading a run folder from elsewhere never runs code from it (docs/reliability.md, Loading).

`load_run` rebuilds the model from plan.json (JSON only) and loads best.weights.h5
(HDF5 tensors only). A `.keras` file with a Lambda layer and a pickle planted in the
folder are never opened; a pickle in place of the weights is refused by name.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest

from trainer.atomic import write_json
from trainer.errors import RunDirError
from trainer.plan import Plan, save_plan

REPO = Path(__file__).resolve().parents[2]


class _Payload:
    """Unpickling this writes the sentinel file: proof that pickled code ran."""

    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return (Path.write_text, (self.sentinel, "pickled code ran"))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A run folder with real weights, plus a hostile .keras model and a pickle."""
    import keras

    from trainer.train.setup import build_model_for_plan

    root = tmp_path_factory.mktemp("load")
    run = root / "run"
    run.mkdir()
    plan = Plan.from_dict(
        {
            "version": 1,
            "backbone": "unet_small",
            "input_size": [32, 32],
            "micro_batch": 2,
            "data": {"path": str(root / "data"), "mask_values": [0, 255]},
        }
    )
    save_plan(plan, run / "plan.json")
    build_model_for_plan(plan, 2, compile=False).save_weights(str(run / "best.weights.h5"))
    write_json(run / "metrics.json", {"num_classes": 2, "mask_values": [0, 255]})

    sentinel = root / "sentinel.txt"
    hostile = keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Lambda(lambda x, s=str(sentinel): (open(s, "w").write("ran"), x)[1]),
        ]
    )
    hostile.save(run / "model.keras")
    (run / "model.pkl").write_bytes(pickle.dumps(_Payload(sentinel)))
    sentinel.unlink(missing_ok=True)  # building the Lambda above ran it once, here
    return run


def test_load_run_opens_neither_the_keras_file_nor_the_pickle(run, monkeypatch):
    import keras

    from trainer.use.inference import load_run

    opened = []
    monkeypatch.setattr(keras.saving, "load_model", lambda *a, **k: opened.append((a, k)))
    monkeypatch.setattr(keras.models, "load_model", lambda *a, **k: opened.append((a, k)))
    monkeypatch.setattr(pickle, "load", lambda *a, **k: opened.append(a))
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: opened.append(a))
    loaded = load_run(run)
    assert loaded.model.output_shape == (None, 32, 32, 1)
    assert opened == []
    assert not (run.parent / "sentinel.txt").exists()


def test_the_planted_keras_file_is_refused_by_keras_safe_mode(run):
    """The planted file really is hostile: safe mode (Keras' default) refuses its Lambda."""
    import keras

    with pytest.raises(ValueError, match="unsafe|lambda|Lambda"):
        keras.saving.load_model(run / "model.keras", safe_mode=True)
    assert not (run.parent / "sentinel.txt").exists()


def test_a_pickle_in_place_of_the_weights_is_refused_by_name(run, tmp_path):
    import shutil

    from trainer.use.inference import load_run

    bad = tmp_path / "run"
    shutil.copytree(run, bad)
    sentinel = tmp_path / "sentinel.txt"
    (bad / "best.weights.h5").write_bytes(pickle.dumps(_Payload(sentinel)))
    with pytest.raises(RunDirError, match=r"best.weights.h5: does not fit the model"):
        load_run(bad)
    assert not sentinel.exists()


UNSAFE = re.compile(
    r"safe_mode\s*=\s*False|pickle\.loads?\(|allow_pickle\s*=\s*True|torch\.load\(|"
    r"yaml\.load\(|dill\.|cloudpickle|marshal\.loads?\(|\beval\(|\bexec\("
)


def test_no_code_path_deserialises_code():
    """No module of fitplan unpickles, evals or loads a Keras model outside safe mode."""
    hits = [
        f"{path.relative_to(REPO)}:{n}: {line.strip()}"
        for folder in ("trainer", "planner")
        for path in sorted((REPO / folder).rglob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if UNSAFE.search(line) and not line.lstrip().startswith("#")
    ]
    assert hits == []
    loads = [
        f"{path.relative_to(REPO)}"
        for folder in ("trainer", "planner")
        for path in sorted((REPO / folder).rglob("*.py"))
        if "load_model(" in (text := path.read_text(encoding="utf-8"))
        and "safe_mode=True" not in text
    ]
    assert loads == []
