"""The U-Net: input normalisation, a five-output encoder, a decoder and the head.

Layout of a built model (`model.summary()` shows it):

    image (H, W, C) in [0, 1]
    -> input_scaling      the encoder's own input normalisation (BACKBONE_INFO["preprocess"])
    -> encoder            nested keras.Model, outputs at strides 2, 4, 8, 16, 32
    -> decoder1..4        upsample x2, concat the skip, two conv-norm-ReLU
    -> decoder5           upsample x2 to (H, W), two conv-norm-ReLU
    -> logits             1x1 conv: 1 channel (binary) or num_classes channels
    -> probabilities      sigmoid / softmax, always float32 (`output="probabilities"`)
       or logits_float32  the logits as float32 (`output="logits"`, what training uses)

Both outputs have the same layers and weights (the last layer is an `Activation`
either way), so weights saved from a logits model load into a probabilities model.
"""

from __future__ import annotations

import keras
from keras import layers

from trainer.errors import FitplanError, WeightsError
from trainer.models.backbones import backbone_info
from trainer.models.encoders import build_application_encoder, build_small_encoder
from trainer.models.layers import (
    NORMALIZATIONS,
    CaffePreprocess,
    batchnorm_layers,
    calibrate_batchnorm,
    conv_block,
    freeze_batchnorm,
    set_batchnorm_momentum,
)
from trainer.models.weights import resolve_weights


def build_unet(
    backbone: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    weights: str = "none",
    normalization: str = "train",
    seed: int | None = None,
    output: str = "probabilities",
) -> keras.Model:
    """Build a U-Net for segmentation.

    Args:
        backbone: encoder, a key of `BACKBONE_INFO` (`"unet_small"`,
            `"mobilenet_v3_small"`, `"mobilenet_v3_large"`, `"efficientnet_b0"`,
            `"efficientnetv2_b0"`, `"resnet50"`).
        input_shape: `(H, W, C)`; H and W multiples of 32 (the bottleneck is at
            1/32), not necessarily equal. The model takes float32 images in
            [0, 1] and applies the encoder's own normalisation itself. ImageNet
            encoders need C = 3 (the data pipeline replicates grey to RGB and
            drops alpha); `unet_small` takes any C.
        num_classes: classes including background. `2`: one sigmoid channel;
            more: `num_classes` softmax channels.
        weights: `"none"` (default): random initialisation; `"imagenet"`: the
            Keras cache file for this backbone (see `resolve_weights`); or a path
            to an encoder weights file.
        normalization: `"train"` (default): ordinary BatchNorm; `"frozen"`: every
            BatchNorm layer non-trainable (inference mode), for small
            micro-batches; `"group"`: GroupNorm in the decoder, encoder BatchNorm
            frozen. Frozen statistics that no file provides are calibrated on
            one seeded batch of noise (see `calibrate_batchnorm`).
        seed: seeds Python, NumPy and the backend (`keras.utils.set_random_seed`)
            before building, so initial weights repeat. `None` (default): leave
            the random state alone.
        output: `"probabilities"` (default: sigmoid / softmax, for inference and
            export) or `"logits"` (for training: the loss takes the cross-entropy
            from the logits, `trainer.train.losses`).

    Returns:
        An uncompiled `keras.Model` mapping `(batch, H, W, C)` to
        `(batch, H, W, 1 or num_classes)` float32 probabilities or logits. The
        encoder is `model.get_layer("encoder")`.

    Raises:
        WeightsError: weights asked for but not available (before building).
        FitplanError: an invalid argument, named with the received value.
    """
    info = backbone_info(backbone)
    height, width, channels = _check_input_shape(input_shape, backbone, info)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise FitplanError(
            "`num_classes` must be an integer >= 2 (background included). "
            f"Received: num_classes={num_classes!r}"
        )
    check_normalization(normalization)
    if output not in OUTPUTS:
        raise FitplanError(f"`output` must be 'probabilities' or 'logits'. Received: {output=}")
    weights_path = resolve_weights(backbone, weights)
    if seed is not None:
        keras.utils.set_random_seed(seed)

    inputs = keras.Input((height, width, channels), name="image")
    x = _input_scaling(info["preprocess"])(inputs)
    if info["application"] is None:
        encoder = build_small_encoder(
            (height, width, channels), info["encoder_filters"], normalization
        )
        if weights_path is not None:
            _load_encoder_weights(encoder, weights_path, backbone)
    else:
        encoder = build_application_encoder(
            backbone, (height, width, channels), weights_path, imagenet=weights == "imagenet"
        )
    features = encoder(x)
    x = _decoder(features, info["decoder_filters"], normalization)
    out_channels = 1 if num_classes == 2 else num_classes
    x = layers.Conv2D(out_channels, 1, name="logits")(x)
    outputs = _head(out_channels, output)(x)
    model = keras.Model(inputs, outputs, name=f"unet_{backbone}")
    if normalization == "train":  # moving statistics that keep up with short runs
        set_batchnorm_momentum(model)
    if normalization in ("frozen", "group"):
        # "group": keras.applications encoders create their BatchNorm layers inside the
        # constructor and cannot swap them without rebuilding the whole network (and
        # losing the pretrained layout), so their BatchNorm runs in inference mode.
        freeze_batchnorm(model)
        # Statistics nobody trained: all of them from scratch, the decoder's otherwise.
        fresh = batchnorm_layers(model if weights_path is None else _decoder_only(model))
        calibrate_batchnorm(model, fresh, seed)
    return model


OUTPUTS = ("probabilities", "logits")


def _head(out_channels: int, output: str) -> layers.Layer:
    # float32 even under a mixed policy: the loss and metrics then see full precision.
    if output == "logits":
        return layers.Activation("linear", dtype="float32", name="logits_float32")
    activation = "sigmoid" if out_channels == 1 else "softmax"
    return layers.Activation(activation, dtype="float32", name="probabilities")


def outputs_logits(model: keras.Model) -> bool:
    """Whether a `build_unet` model outputs logits (`output="logits"`), not probabilities."""
    return model.layers[-1].name == "logits_float32"


def with_probabilities(model: keras.Model) -> keras.Model:
    """The same model (shared layers and weights) with sigmoid / softmax on its logits.

    A model that already outputs probabilities is returned as it is.
    """
    if not outputs_logits(model):
        return model
    logits = model.get_layer("logits").output
    head = _head(logits.shape[-1], "probabilities")
    return keras.Model(model.inputs, head(logits), name=model.name)


def _decoder_only(model: keras.Model) -> list:
    return [layer for layer in model.layers if layer.name != "encoder"]


def check_normalization(normalization: str) -> None:
    if normalization not in NORMALIZATIONS:
        raise FitplanError(
            f"`normalization` must be one of {', '.join(repr(n) for n in NORMALIZATIONS)}. "
            f"Received: normalization={normalization!r}",
            hint="a plan's 'auto' is resolved by Plan.resolved_normalization",
        )


def _check_input_shape(input_shape, backbone: str, info: dict) -> tuple[int, int, int]:
    ok = (
        isinstance(input_shape, (tuple, list))
        and len(input_shape) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in input_shape)
    )
    if not ok or input_shape[0] % 32 or input_shape[1] % 32:
        raise FitplanError(
            "`input_shape` must be (height, width, channels) with height and width positive "
            f"multiples of 32. Received: input_shape={input_shape!r}"
        )
    if info["application"] is not None and input_shape[2] != 3:
        raise FitplanError(
            f"backbone {backbone!r} needs 3 input channels (grey images are replicated to "
            f"RGB and alpha dropped by the data pipeline). Received: input_shape={input_shape!r}"
        )
    return tuple(input_shape)


def _input_scaling(preprocess: str) -> layers.Layer:
    if preprocess == "caffe":
        return CaffePreprocess(name="input_scaling")
    if preprocess == "0_255":
        # MobileNetV3 and EfficientNet(V2) carry their own normalisation layers
        # (include_preprocessing / the stem Normalization) that expect [0, 255].
        return layers.Rescaling(255.0, name="input_scaling")
    return layers.Rescaling(2.0, offset=-1.0, name="input_scaling")  # unet_small: [-1, 1]


def _load_encoder_weights(encoder: keras.Model, path: str, backbone: str) -> None:
    try:
        encoder.load_weights(path)
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise WeightsError(f"cannot load weights file {path!r} into {backbone!r}: {exc}") from exc


def _decoder(features: list, filters: tuple[int, ...], normalization: str):
    *skips, x = features
    for i, (skip, f) in enumerate(zip(reversed(skips), filters[:-1], strict=True), start=1):
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"decoder{i}_up")(x)
        x = layers.Concatenate(name=f"decoder{i}_concat")([x, skip])
        x = conv_block(x, f, normalization, f"decoder{i}")
    # The stride-2 skip is the finest: one more x2 brings the map back to exactly (H, W).
    x = layers.UpSampling2D(2, interpolation="bilinear", name="decoder5_up")(x)
    return conv_block(x, filters[-1], normalization, "decoder5")
