"""Building blocks shared by the decoder and the plain U-Net encoder.

`NORMALIZATIONS` are the three ways a model handles normalisation:

- `"train"`: ordinary BatchNorm, statistics from each micro-batch.
- `"frozen"`: every BatchNorm layer non-trainable. In Keras 3 that also runs it in
  inference mode (moving statistics, fixed scale and shift), which is what small
  micro-batches need: their batch statistics are noise, and gradient accumulation
  cannot help because the statistics are computed per micro-batch. A frozen
  BatchNorm that was never trained is the identity (mean 0, variance 1), so our
  own convolutions get a bias in this mode to keep a learnable shift.
- `"group"`: GroupNormalization in the layers we build (independent of the batch
  size); BatchNorm inside `keras.applications` encoders is frozen instead.
"""

from __future__ import annotations

import math

import keras
from keras import layers

NORMALIZATIONS = ("train", "frozen", "group")

# At most this many groups; every filter count we use (16 ... 256) is divisible by it.
_GROUPS = 8


@keras.saving.register_keras_serializable(package="fitplan")
class CaffePreprocess(layers.Layer):
    """RGB in [0, 1] to the "caffe" input ResNet50's ImageNet weights expect.

    That is `keras.applications.resnet50.preprocess_input` inside the model: scale
    to [0, 255], reorder RGB to BGR and subtract the ImageNet mean per channel. No
    built-in layer reorders channels, hence this small (serialisable) layer.
    """

    # ImageNet mean in BGR order, from keras/src/applications/imagenet_utils.py.
    MEAN_BGR = (103.939, 116.779, 123.68)

    def call(self, inputs):
        x = keras.ops.flip(inputs * 255.0, axis=-1)
        return x - keras.ops.convert_to_tensor(self.MEAN_BGR, dtype=x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


def norm_layer(normalization: str, filters: int, name: str) -> layers.Layer:
    """The normalisation layer our own blocks use under `normalization`."""
    if normalization == "group":
        return layers.GroupNormalization(groups=math.gcd(_GROUPS, filters), name=name)
    # "frozen": built non-trainable, so it runs in inference mode from the start.
    return layers.BatchNormalization(trainable=normalization != "frozen", name=name)


def conv_block(x, filters: int, normalization: str, name: str, *, first_stride: int = 1):
    """Two 3x3 conv -> norm -> ReLU layers (the U-Net stage)."""
    # A bias is redundant before a trainable norm layer's shift, not before a frozen one.
    use_bias = normalization == "frozen"
    for i, stride in ((1, first_stride), (2, 1)):
        x = layers.Conv2D(
            filters,
            3,
            strides=stride,
            padding="same",
            use_bias=use_bias,
            kernel_initializer="he_normal",
            name=f"{name}_conv{i}",
        )(x)
        x = norm_layer(normalization, filters, f"{name}_norm{i}")(x)
        x = layers.ReLU(name=f"{name}_relu{i}")(x)
    return x


def iter_layers(model: keras.Layer):
    """Every layer inside `model`, nested models included, depth first."""
    for layer in getattr(model, "layers", ()):
        yield layer
        yield from iter_layers(layer)


def freeze_batchnorm(model: keras.Layer) -> None:
    """Make every BatchNorm layer in `model` (nested ones too) non-trainable."""
    for layer in iter_layers(model):
        if isinstance(layer, layers.BatchNormalization):
            layer.trainable = False
