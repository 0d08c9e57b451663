"""Encoders: a `keras.applications` backbone cut into five outputs by output stride.

The encoder is a `keras.Model` named `"encoder"` whose outputs are the features at
strides 2, 4, 8, 16 (the skips) and 32 (the bottleneck). Each is the *last* layer
whose output has that spatial size, found from the built model's output shapes:
layer names drift between Keras versions (MobileNetV3's activations are numbered
in creation order, so they change with every model built in a process), shapes
do not.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from trainer.errors import FitplanError, WeightsError
from trainer.models.backbones import STRIDES, backbone_info
from trainer.models.layers import conv_block

# keras/src/applications/efficientnet.py, IMAGENET_STDDEV_RGB.
_IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)

# Errors `load_weights` raises for a file of the wrong format or architecture.
_LOAD_ERRORS = (OSError, ValueError, KeyError, IndexError, TypeError)


def stride_outputs(model: keras.Model, height: int, width: int) -> list:
    """The last layer output at each of `STRIDES`, in that order.

    Raises:
        FitplanError: some stride has no layer (input too small or odd encoder).
    """
    found = {}
    for layer in model.layers:
        # Padding layers sit just before a strided conv and add a pixel or three;
        # they are never a feature map worth skipping, so keep them out of the match.
        if isinstance(layer, (layers.InputLayer, layers.ZeroPadding2D)):
            continue
        shape = tuple(layer.output.shape)
        if len(shape) != 4:
            continue
        for stride in STRIDES:
            if shape[1:3] == (height // stride, width // stride):
                found[stride] = layer.output
    missing = [s for s in STRIDES if s not in found]
    if missing:
        raise FitplanError(
            f"encoder {model.name!r} has no feature map at stride(s) {missing} for input "
            f"{height}x{width}. Received: input_shape=({height}, {width}, ...)"
        )
    return [found[s] for s in STRIDES]


def build_application_encoder(
    backbone: str,
    input_shape: tuple[int, int, int],
    weights_path: str | None,
    *,
    imagenet: bool = False,
) -> keras.Model:
    """A `keras.applications` backbone (no top) as a five-output encoder.

    Args:
        backbone: a `BACKBONE_INFO` key with an `application`.
        input_shape: `(H, W, 3)`, H and W multiples of 32.
        weights_path: a weights file for the application model (no top), or
            `None` for random weights.
        imagenet: the file is Keras' own ImageNet file, so Keras' ImageNet-only
            adjustments apply (see `_match_keras_imagenet_input`).
    """
    info = backbone_info(backbone)
    constructor = getattr(keras.applications, info["application"])
    # Built with weights=None and loaded below: the same `model.load_weights(path)`
    # that keras.applications runs for `weights=<path>`, but a bad file becomes a
    # WeightsError that names it instead of a traceback.
    app = constructor(input_shape=tuple(input_shape), include_top=False, weights=None)
    if weights_path is not None:
        try:
            app.load_weights(weights_path)
        except _LOAD_ERRORS as exc:
            raise WeightsError(
                f"cannot load weights file {weights_path!r} into {backbone!r} "
                f"({info['application']}, include_top=False): {exc}"
            ) from exc
        if imagenet:
            _match_keras_imagenet_input(backbone, app)
    return keras.Model(app.input, stride_outputs(app, *input_shape[:2]), name="encoder")


def _match_keras_imagenet_input(backbone: str, app: keras.Model) -> None:
    """Reproduce what `EfficientNetB0(weights="imagenet")` does beyond loading the file.

    For ImageNet weights Keras inserts `Rescaling(1 / sqrt(IMAGENET_STDDEV_RGB))`
    after the stem's Normalization layer (the file's variance is the standard
    deviation; tensorflow/tensorflow#49930). Loading the same file by path skips
    that layer, so we fold the factor into the Normalization variance instead:
    `(x - m) / sqrt(v) / sqrt(s) == (x - m) / sqrt(v * s)`.
    """
    if backbone != "efficientnet_b0":
        return
    norm = next(layer for layer in app.layers if isinstance(layer, layers.Normalization))
    mean, variance, count = norm.get_weights()
    norm.set_weights([mean, variance * np.asarray(_IMAGENET_STDDEV_RGB, variance.dtype), count])
    norm.finalize_state()  # Normalization caches mean/variance as tensors


def build_small_encoder(
    input_shape: tuple[int, int, int], filters: tuple[int, ...], normalization: str
) -> keras.Model:
    """The plain U-Net encoder of `unet_small`: a conv block per stride, no pretraining.

    A strided stem conv goes straight to 1/2 resolution, so no encoder convolution
    runs at full resolution: the expensive layers of a classic U-Net, and the
    reason this one is fast enough for CPU tests and demos. Because we build it,
    its blocks use GroupNorm under `normalization="group"` (a keras.applications
    encoder cannot swap its norm layers).
    """
    inputs = keras.Input(tuple(input_shape), name="encoder_input")
    x = conv_block(inputs, filters[0], normalization, "enc1", first_stride=2)
    outputs = [x]
    for i, f in enumerate(filters[1:], start=2):
        x = layers.MaxPooling2D(2, name=f"enc{i}_pool")(x)
        x = conv_block(x, f, normalization, f"enc{i}")
        outputs.append(x)
    return keras.Model(inputs, outputs, name="encoder")
