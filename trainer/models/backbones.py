"""What fitplan knows about each backbone, as data (no TensorFlow import).

The planner reads `BACKBONE_INFO` for its presets; the model builder reads the
Keras constructor, the input normalisation and the decoder widths from it; the
weights lookup reads the pretrained file name. Parameter counts and skip
channels were measured with `build_unet(..., num_classes=2)` on Keras 3.15 and do
not depend on the input size (a test checks them); `gflops_256` is the forward
pass of one 256x256 image in GFLOP (multiply-add = 2), from TensorFlow's graph
profiler (`docs/models.md`), `encoder_gflops_256` the same for the encoder alone. Training costs about three times the forward pass.
"""

from __future__ import annotations

from typing import Any

from trainer.errors import FitplanError

# Decoder filters per stage, from the 1/16 stage up to full resolution.
_DECODER = (256, 128, 64, 32, 16)

# The exact file names Keras 3 would download for include_top=False (see
# keras/src/applications/*.py: mobilenet_v3 `weights_mobilenet_v3_{model}_no_top_v2.h5`,
# efficientnet(_v2) `{name}_notop.h5`, resnet `{name}_weights_tf_dim_ordering_tf_kernels_notop.h5`).
# tests/trainer/test_models.py checks each against Keras by intercepting the download.
# `pretrained_hash`: the MD5 Keras publishes for that file (the no-top entry of each
# module's WEIGHTS_HASHES), checked by `keras.utils.get_file` when fitplan downloads it;
# tests/trainer/test_weights.py checks them against Keras' tables.
BACKBONE_INFO: dict[str, dict[str, Any]] = {
    "unet_small": {
        "application": None,
        "pretrained_file": None,
        "pretrained_hash": None,
        "pretrained_url": None,
        "preprocess": "unit",
        "input_normalization": "[0, 1] -> [-1, 1]",
        "encoder_filters": (16, 32, 64, 128, 256),
        "decoder_filters": (128, 64, 32, 16, 16),
        "skip_channels": (16, 32, 64, 128, 256),
        "params": 1_971_777,
        "encoder_params": 1_181_744,
        "gflops_256": 2.37,
        "encoder_gflops_256": 0.55,
        "min_input_size": 32,
    },
    "mobilenet_v3_small": {
        "application": "MobileNetV3Small",
        "pretrained_file": "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
        "pretrained_hash": "d3e8ec802a04aa4fc771ee12a9a9b836",
        "pretrained_url": "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v3/",
        "preprocess": "0_255",
        "input_normalization": "x * 255, then the encoder's own Rescaling to [-1, 1]",
        "decoder_filters": _DECODER,
        "skip_channels": (16, 72, 96, 288, 576),
        "params": 4_267_777,
        "encoder_params": 939_120,
        "gflops_256": 5.82,
        "encoder_gflops_256": 0.15,
        "min_input_size": 32,
    },
    "mobilenet_v3_large": {
        "application": "MobileNetV3Large",
        "pretrained_file": "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
        "pretrained_hash": "07fb09a5933dd0c8eaafa16978110389",
        "pretrained_url": "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v3/",
        "preprocess": "0_255",
        "input_normalization": "x * 255, then the encoder's own Rescaling to [-1, 1]",
        "decoder_filters": _DECODER,
        "skip_channels": (64, 72, 240, 672, 960),
        "params": 8_274_193,
        "encoder_params": 2_996_352,
        "gflops_256": 7.95,
        "encoder_gflops_256": 0.58,
        "min_input_size": 32,
    },
    "efficientnet_b0": {
        "application": "EfficientNetB0",
        "pretrained_file": "efficientnetb0_notop.h5",
        "pretrained_hash": "50bc09e76180e00e4465e1a485ddc09d",
        "pretrained_url": "https://storage.googleapis.com/keras-applications/",
        "preprocess": "0_255",
        "input_normalization": "x * 255, then the encoder's own ImageNet mean/std",
        "decoder_filters": _DECODER,
        "skip_channels": (96, 144, 240, 672, 1280),
        "params": 10_115_380,
        "encoder_params": 4_049_571,
        "gflops_256": 9.44,
        "encoder_gflops_256": 1.05,
        "min_input_size": 32,
    },
    "efficientnetv2_b0": {
        "application": "EfficientNetV2B0",
        "pretrained_file": "efficientnetv2-b0_notop.h5",
        "pretrained_hash": "893217f2bb855e2983157299931e43ff",
        "pretrained_url": "https://storage.googleapis.com/tensorflow/keras-applications/efficientnet_v2/",
        "preprocess": "0_255",
        "input_normalization": "x * 255, then the encoder's own ImageNet mean/std",
        "decoder_filters": _DECODER,
        "skip_channels": (16, 32, 192, 672, 1280),
        "params": 11_842_273,
        "encoder_params": 5_919_312,
        "gflops_256": 8.89,
        "encoder_gflops_256": 1.9,
        "min_input_size": 32,
    },
    "resnet50": {
        "application": "ResNet50",
        "pretrained_file": "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "pretrained_hash": "4d473c1dd8becc155b73f8504c6f6626",
        "pretrained_url": "https://storage.googleapis.com/tensorflow/keras-applications/resnet/",
        "preprocess": "caffe",
        "input_normalization": "x * 255, RGB -> BGR, minus the ImageNet mean (caffe)",
        "decoder_filters": _DECODER,
        "skip_channels": (64, 256, 512, 1024, 2048),
        "params": 32_602_641,
        "encoder_params": 23_587_712,
        "gflops_256": 20.7,
        "encoder_gflops_256": 10.12,
        "min_input_size": 32,
    },
}

BACKBONES: tuple[str, ...] = tuple(BACKBONE_INFO)

# Output strides of the encoder's five outputs: four skips and the bottleneck.
STRIDES: tuple[int, ...] = (2, 4, 8, 16, 32)


def backbone_info(backbone: str) -> dict[str, Any]:
    """`BACKBONE_INFO[backbone]`, or a `FitplanError` that lists the known backbones."""
    try:
        return BACKBONE_INFO[backbone]
    except (KeyError, TypeError):
        known = ", ".join(repr(b) for b in BACKBONES)
        raise FitplanError(
            f"`backbone` must be one of {known}. Received: backbone={backbone!r}"
        ) from None
