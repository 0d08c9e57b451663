"""Keras' own gradient accumulation, as the trainer configures it, is exact without BatchNorm."""

import keras
import numpy as np
import pytest

from tests.plans import minimal_plan
from trainer.plan import Plan
from trainer.train.setup import make_optimizer


def _plan(name: str, micro_batch: int, steps: int) -> Plan:
    optimizer = {"name": name, "learning_rate": 0.05}
    return minimal_plan(micro_batch=micro_batch, accumulation_steps=steps, optimizer=optimizer)


def _model(seed: int = 3) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(1, 1, activation="sigmoid")(x)
    return keras.Model(inputs, x)


@pytest.mark.parametrize(("name", "tol"), [("sgd", 1e-6), ("adam", 1e-5)])
def test_k_micro_batches_of_m_equal_one_batch_of_k_times_m(name, tol):
    rng = np.random.default_rng(0)
    x = rng.random((16, 8, 8, 3), dtype=np.float32)
    y = (rng.random((16, 8, 8, 1)) > 0.5).astype(np.float32)
    m, k = 4, 4

    big = _model()
    big.compile(make_optimizer(_plan(name, m * k, 1)), loss="binary_crossentropy")
    small = _model()
    small.compile(make_optimizer(_plan(name, m, k)), loss="binary_crossentropy")
    assert small.optimizer.gradient_accumulation_steps == k

    for _ in range(3):  # three optimizer updates
        big.train_on_batch(x, y)
        for i in range(k):
            small.train_on_batch(x[i * m : (i + 1) * m], y[i * m : (i + 1) * m])
    for a, b in zip(big.get_weights(), small.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=tol, rtol=0)
    # and the weights really moved, so the comparison means something
    assert not np.allclose(_model().get_weights()[0], big.get_weights()[0])


def test_no_accumulation_leaves_keras_default():
    opt = make_optimizer(_plan("adam", 4, 1))
    assert opt.gradient_accumulation_steps is None
