"""Freeze-then-fine-tune and small helpers on a built U-Net."""

from __future__ import annotations

import keras

from trainer.errors import FitplanError
from trainer.models.layers import freeze_batchnorm
from trainer.models.unet import check_normalization


def encoder_of(model: keras.Model) -> keras.Model:
    """The nested encoder of a `build_unet` model (the layer named `"encoder"`)."""
    try:
        return model.get_layer("encoder")
    except ValueError:
        raise FitplanError(
            f"model {model.name!r} has no layer named 'encoder': not built by build_unet"
        ) from None


def set_encoder_trainable(
    model: keras.Model, trainable: bool, normalization: str, *, pretrained: bool = False
) -> None:
    """Freeze or unfreeze the encoder, keeping BatchNorm as `normalization` says.

    Keras 3 propagates `trainable` to every nested layer, so unfreezing the encoder
    would also unfreeze its BatchNorm layers. Under `"frozen"` and `"group"` they
    are frozen again: the usual fine-tuning practice of keeping BatchNorm in
    inference mode, because the micro-batches that asked for these modes give
    noisy batch statistics. A frozen layer runs in inference mode in Keras 3.

    With a `pretrained` encoder its BatchNorm layers stay frozen under `"train"` too
    (the decoder's train): Keras' transfer-learning guide keeps BatchNorm in inference
    mode when the base model is unfrozen for fine-tuning, so that the ImageNet
    statistics are not replaced by a few batches' and the pretrained features are not
    wrecked (https://keras.io/guides/transfer_learning/, "Fine-tuning").

    Recompile the model afterwards: `compile` captures the trainable variables.

    Args:
        model: a model from `build_unet`.
        trainable: `False` freezes the whole encoder (the warm-up phase); `True`
            unfreezes it for fine-tuning.
        normalization: the model's normalisation: `"train"`, `"frozen"` or `"group"`.
        pretrained: the encoder holds pretrained weights. Defaults to `False`.
    """
    check_normalization(normalization)
    encoder = encoder_of(model)
    encoder.trainable = bool(trainable)
    if normalization in ("frozen", "group"):
        freeze_batchnorm(model)
    elif pretrained:
        freeze_batchnorm(encoder)
