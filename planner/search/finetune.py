"""How many epochs a pretrained plan trains with its encoder frozen (issue 15, 2).

Keras' transfer-learning recipe (https://keras.io/guides/transfer_learning/): train
the new layers on the frozen pretrained base first, then unfreeze it and fine-tune
everything at a low learning rate (`finetune_lr_factor`), BatchNorm of the base kept
in inference mode (`trainer.models.set_encoder_trainable(..., pretrained=True)`).
The decoder starts random, so its first updates would push large, noisy gradients
into the ImageNet features; a short frozen phase lets it settle first.

The planner's epochs come from the time budget (epoch time measured by the trials),
so a share of the epochs is a share of the budget.
"""

from __future__ import annotations

# Share of the planned epochs (so of the time budget) with the encoder frozen.
FREEZE_SHARE = 0.1
# The decoder settles within a few epochs; beyond this the frozen phase only costs.
MAX_FREEZE_EPOCHS = 5


def freeze_epochs(weights: str, epochs: int) -> int:
    """Epochs with the encoder frozen before fine-tuning.

    Args:
        weights: the plan's weights: `"none"` trains from scratch (nothing to freeze).
        epochs: the plan's epochs (from the time budget).

    Returns:
        0 from scratch or with fewer than 2 epochs; else `FREEZE_SHARE` of `epochs`,
        rounded, at least 1 and at most `MAX_FREEZE_EPOCHS`, always leaving at least
        one fine-tuning epoch.
    """
    if weights == "none" or epochs < 2:
        return 0
    return max(1, min(MAX_FREEZE_EPOCHS, round(FREEZE_SHARE * epochs), epochs - 1))


def plan_weights(backbone: str, requested: str, micro_batch: int, normalization: str):
    """The plan's weights and BatchNorm mode: pretrained when it can be had, else scratch.

    `"imagenet"` whose file is neither cached nor downloadable (offline), or a backbone
    without pretrained weights, plans from scratch with a one-line `FitplanWarning`
    instead of a plan that fails when training starts; the BatchNorm mode is then the
    from-scratch one (`normalization_for(micro_batch, "none")`: frozen BatchNorm
    calibrated on noise collapsed from scratch, docs/models.md).

    Returns:
        `(weights, normalization, notice)`; `notice` is `None` when nothing changed.
    """
    import warnings

    from trainer.errors import FitplanWarning
    from trainer.models.weights import pretrained_or_none
    from trainer.plan import normalization_for

    weights, notice = pretrained_or_none(backbone, requested)
    if notice is None:
        return weights, normalization, None
    warnings.warn(notice, FitplanWarning, stacklevel=2)
    return weights, normalization_for(micro_batch, weights), notice
