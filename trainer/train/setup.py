"""Turn a plan into a compiled Keras model: precision policy, optimizer, loss, metrics.

Shared by training (`trainer.train.fit`) and the planner's dry runs, so the model, loss,
optimizer and precision the planner measures are the ones that train. The dry runs step at
`accumulation_steps` 1 without the input pipeline; docs/planning.md says what that leaves out.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import keras

from trainer.errors import FitplanWarning
from trainer.plan import Plan
from trainer.train.device import precision_for_capability
from trainer.train.losses import DiceCrossEntropy, segmentation_metrics


def set_precision(plan: Plan, tf: Any = None) -> None:
    """Set the global Keras dtype policy from the plan, warning where it runs slowly.

    The plan's precision is honoured; the warning names the policy this device's
    compute capability calls for (`trainer.train.device.precision_for_capability`:
    >= 8.0 `mixed_bfloat16`, 7.x `mixed_float16`, below `float32`). Under
    `mixed_float16` Keras' `compile` wraps the optimizer in a `LossScaleOptimizer`
    (https://keras.io/api/mixed_precision/loss_scale_optimizer/). Call it after
    `keras.backend.clear_session()`, which resets the policy (MEASURED.md).

    Args:
        plan: the plan.
        tf: the `tensorflow` module (a fake in tests). Defaults to importing it.
    """
    cc = gpu_capability(tf)
    slow = precision_warning(plan.precision, cc)
    if slow:
        warnings.warn(slow, FitplanWarning, stacklevel=2)
    keras.mixed_precision.set_global_policy(plan.precision)


def gpu_capability(tf: Any = None) -> tuple[int, int] | None:
    """Compute capability of TensorFlow's first GPU; `(0, 0)` unknown; `None` without one.

    https://www.tensorflow.org/api_docs/python/tf/config/experimental/get_device_details
    """
    if tf is None:
        import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    cc = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability")
    return (int(cc[0]), int(cc[1])) if cc else (0, 0)


def precision_warning(precision: str, cc: tuple[int, int] | None) -> str | None:
    """Why `precision` is slow on this device (`cc`: `None` for a CPU), or `None`."""
    if cc is None:
        if precision == "mixed_float16":  # measured here: 5.7x slower than float32 on CPU
            return (
                "precision mixed_float16 on a CPU is several times slower than float32; "
                "use mixed_bfloat16 or float32"
            )
        return None
    best = precision_for_capability(cc if cc != (0, 0) else None)
    rank = {"float32": 0, "mixed_float16": 1, "mixed_bfloat16": 2}
    if rank.get(precision, 0) > rank[best]:
        return (
            f"precision {precision} on a GPU of compute capability {cc[0]}.{cc[1]}, which "
            f"has no fast path for it: {best} is the policy for this GPU (`fitplan plan` "
            "here chooses it)"
        )
    return None


def make_optimizer(plan: Plan, learning_rate: float | None = None) -> keras.optimizers.Optimizer:
    """The plan's optimizer, with Keras' own gradient accumulation.

    `gradient_accumulation_steps` is set on this (inner) optimizer; under
    `mixed_float16` `compile` wraps it in a `LossScaleOptimizer`, which refuses the
    argument itself (MEASURED.md). Keras' accumulation averages the k micro-batch
    gradients, so k micro-batches of m equal one batch of k*m (tested).
    """
    from trainer.train.distribute import learning_rate_for
    from trainer.train.distribute_keras import for_current_strategy as safe

    spec = plan.optimizer
    lr = learning_rate_for(plan) if learning_rate is None else learning_rate
    accum = plan.accumulation_steps if plan.accumulation_steps > 1 else None
    common = {"learning_rate": lr, "gradient_accumulation_steps": accum}
    if spec.clipnorm is not None:
        common["clipnorm"] = spec.clipnorm
    # safe(): under a tf.distribute strategy, accumulation needs trainer.train.distribute_keras.
    if spec.name == "adam":
        return safe(keras.optimizers.Adam)(**common)
    if spec.name == "adamw":
        return safe(keras.optimizers.AdamW)(weight_decay=spec.weight_decay, **common)
    return safe(keras.optimizers.SGD)(momentum=0.9, **common)


def compile_model(
    model: keras.Model, plan: Plan, num_classes: int, learning_rate: float | None = None
) -> None:
    """Compile `model` with the plan's optimizer, Dice+CE loss and Dice/IoU metrics.

    Loss and metrics read logits when the model outputs them (`build_unet(...,
    output="logits")`, what training builds), else probabilities; both skip the pixels
    of `plan.data.ignore_index` (when the plan has one).
    """
    from trainer.models import outputs_logits

    kw = {"from_logits": outputs_logits(model), "ignore_index": _ignore_index(plan)}
    model.compile(
        optimizer=make_optimizer(plan, learning_rate),
        loss=DiceCrossEntropy(num_classes, **kw),
        metrics=segmentation_metrics(num_classes, **kw),
        jit_compile=False,  # XLA on CPU was not faster here and adds minutes of compile time
    )
    # Create the optimizer's variables now (in the caller's strategy scope): created inside
    # the first train step instead, they make tf.function trace that step twice, which
    # doubled the CPU cost of starting every fit (and of every trial child).
    model.optimizer.build(model.trainable_variables)


def _ignore_index(plan: Plan) -> int | None:
    """The plan's ignore value; `-1` means none. Labels >= the class count (where the
    pipeline keeps a resolved ignore value such as 255) are ignored by the loss anyway."""
    value = getattr(plan.data, "ignore_index", None)
    return None if value is None or value < 0 else int(value)


def build_model_for_plan(
    plan: Plan,
    num_classes: int,
    *,
    compile: bool = True,
    strategy: Any = None,
    output: str | None = None,
) -> keras.Model:
    """Set the precision policy, build the plan's U-Net and (by default) compile it.

    Args:
        plan: the plan.
        num_classes: classes including background.
        compile: also compile it (optimizer, loss, metrics). Defaults to `True`.
        strategy: a `tf.distribute.Strategy` whose scope the model (and optimizer)
            are created in. Defaults to `None`: the current (default) strategy.
        output: `"logits"` (what training compiles: the loss takes them) or
            `"probabilities"` (inference, export). Defaults to `None`: logits when
            `compile`, else probabilities. The weights are the same either way.
    """
    from trainer.models import build_unet

    # Before entering the scope: clear_session resets the graph that holds the
    # scope stack, so clearing inside a strategy's scope breaks its exit.
    keras.backend.clear_session()
    set_precision(plan)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = build_unet(
            plan.backbone,
            (plan.input_size[0], plan.input_size[1], 3),
            num_classes,
            weights=plan.weights,
            normalization=plan.resolved_normalization,
            seed=plan.seed,
            output=output or ("logits" if compile else "probabilities"),
        )
        if compile:
            compile_model(model, plan, num_classes)
    return model
