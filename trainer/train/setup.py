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

from trainer.plan import Plan
from trainer.train.losses import DiceCrossEntropy, segmentation_metrics


def set_precision(plan: Plan) -> None:
    """Set the global Keras dtype policy from the plan.

    Call it after `keras.backend.clear_session()`, which resets the policy
    (MEASURED.md).
    """
    if plan.precision == "mixed_float16" and not _has_gpu():
        # Measured here: 5.7x slower than float32 on CPU. Honour the plan, but say so.
        warnings.warn(
            "precision mixed_float16 on a CPU is several times slower than float32; "
            "use mixed_bfloat16 or float32",
            stacklevel=2,
        )
    keras.mixed_precision.set_global_policy(plan.precision)


def _has_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


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
