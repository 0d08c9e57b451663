"""Two gaps in Keras 3.15's `tf.distribute` support, closed with Keras' own machinery.

1. Gradient accumulation. The optimizer accumulates with `ops.cond(update step, apply,
   accumulate)` in the replica context, and both branches synchronise replicas
   (`merge_call`). `tf.distribute` refuses a `merge_call` inside a `cond` built in the
   replica context ("`merge_call` called while defining a new graph or a
   tf.function"; keras-team/keras#17429, reproduced here with MirroredStrategy on two
   logical CPUs). Keras' own `LossScaleOptimizer` meets the same limit and enters the
   cross-replica context before its `cond`; `DistributedAccumulation` does the same.
   The accumulators, the averaging of k micro-batches, clipping, weight decay, the
   all-reduce and the update all stay Keras'.

2. The build before `fit`/`evaluate`. Under a strategy Keras pulls one batch from a
   fresh iterator and averages it across replicas with `strategy.reduce`, only to learn
   the input shapes. Under MultiWorkerMirroredStrategy that reduce fails on the
   `(x, y)` tuple ("Attempt to convert a value (PerReplica...)"; keras-team/keras#20585,
   open). It also costs one extra iteration of the dataset, which reseeds the epoch's
   shuffle, so a distributed run would see other crops than a one-device run of the
   same plan. `build_from_spec` gives Keras the dataset's element spec instead.

3. The step's logs under MultiWorkerMirroredStrategy. Keras averages them across
   workers with `strategy.reduce("MEAN", v, axis=0)`, which fails on the scalar loss and
   metrics ("Invalid reduction dimension 0 for input with 0 dimensions"; the same
   issue). `axis=None` averages across replicas, which is what Keras does for every
   other strategy; `patch_multi_worker_logs` swaps that in for MWMS only, so every
   worker sees the same logs and its callbacks take the same decisions.

All three override private hooks (`_backend_apply_gradients`, `_maybe_symbolic_build`,
`reduce_per_replica`), because no public ones exist; tests/trainer/test_distribute.py
fails if a Keras release changes them (distributed training must match one device).
"""

from __future__ import annotations

import functools
from typing import Any

import keras
import tensorflow as tf


class DistributedAccumulation:
    """Mixin for a Keras optimizer class: accumulation that works under a strategy."""

    def _backend_apply_gradients(self, grads, trainable_variables):
        steps = self.gradient_accumulation_steps
        if (
            not steps
            or not tf.distribute.has_strategy()
            or tf.distribute.in_cross_replica_context()
            # Without merge_call (XLA on GPUs) Keras' own path already works.
            or tf.__internal__.distribute.strategy_supports_no_merge_call()
        ):
            return super()._backend_apply_gradients(grads, trainable_variables)
        if self.use_ema:  # pragma: no cover - make_optimizer never sets EMA
            raise NotImplementedError("EMA with accumulation under tf.distribute")
        accumulators = [
            self._accumulated_gradients[self._get_variable_index(v)] for v in trainable_variables
        ]

        def update(grads, variables):
            # Each replica averages its own k micro-batch gradients; the all-reduce in
            # _backend_update_step then sums the replicas' (Keras scaled each replica's
            # loss by 1 / replicas), as Keras' single-device accumulation does.
            grads = [(g + a) / steps for g, a in zip(grads, accumulators, strict=True)]
            grads = self._clip_gradients(grads)
            self._apply_weight_decay(variables)
            self._backend_update_step(grads, variables, self.learning_rate)
            self._backend_reset_gradient_accumulators()

        def cross_replica(distribution, grads, variables):
            is_update_step = (self._iterations + 1) % steps == 0
            keras.ops.cond(
                is_update_step,
                lambda: distribution.extended.call_for_each_replica(
                    update, args=(grads, variables)
                ),
                lambda: distribution.extended.call_for_each_replica(
                    self._backend_increment_gradient_accumulators, args=(grads, accumulators)
                ),
            )

        tf.distribute.get_replica_context().merge_call(
            cross_replica, args=(grads, trainable_variables)
        )


@functools.cache
def _subclass(cls: type) -> type:
    return type(f"Distributed{cls.__name__}", (DistributedAccumulation, cls), {})


def for_current_strategy(cls: type) -> type:
    """`cls`, or its accumulation-safe subclass when a non-default strategy is in scope.

    Args:
        cls: a Keras optimizer class (e.g. `keras.optimizers.Adam`).
    """
    return _subclass(cls) if tf.distribute.has_strategy() else cls


def build_from_spec(model: keras.Model, strategy: tf.distribute.Strategy, spec: Any) -> None:
    """Make `model` build its compile state from `spec`, not from a batch, under `strategy`.

    Args:
        model: a model created in `strategy.scope()`.
        strategy: the strategy; the default one leaves `model` untouched.
        spec: the training dataset's `element_spec`, `(x, y)` `tf.TensorSpec`s.
    """
    if strategy is tf.distribute.get_strategy() and not tf.distribute.has_strategy():
        return

    def maybe_symbolic_build(iterator=None, data_batch=None):
        with strategy.scope():
            model._symbolic_build(data_batch=spec if data_batch is None else data_batch)

    # An instance attribute shadows Trainer._maybe_symbolic_build for this model only.
    model._maybe_symbolic_build = maybe_symbolic_build


def patch_multi_worker_logs() -> None:
    """Make Keras average a step's logs across workers with `axis=None` (see item 3).

    Process-wide, idempotent, and a no-op for every strategy but a multi-worker
    `MultiWorkerMirroredStrategy`. Called when such a strategy is created.
    """
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = tf_trainer.reduce_per_replica
    if getattr(original, "_fitplan_patched", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(
            strategy
        ):
            return tf.nest.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original(values, strategy, reduction)

    reduce_per_replica._fitplan_patched = True
    tf_trainer.reduce_per_replica = reduce_per_replica
