"""U-Net models over Keras application encoders, and where their weights come from.

`BACKBONE_INFO`, `BACKBONES` and `resolve_weights` are plain Python, so the planner
can read presets and check weights without importing TensorFlow. The model
builders import Keras on first use (PEP 562 module `__getattr__`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainer.models.backbones import BACKBONE_INFO, BACKBONES, STRIDES, backbone_info
from trainer.models.weights import keras_cache_dir, resolve_weights

if TYPE_CHECKING:
    from trainer.models.finetune import encoder_of, set_encoder_trainable
    from trainer.models.layers import NORMALIZATIONS
    from trainer.models.unet import build_unet, outputs_logits, with_probabilities

_LAZY = {
    "build_unet": "trainer.models.unet",
    "outputs_logits": "trainer.models.unet",
    "with_probabilities": "trainer.models.unet",
    "set_encoder_trainable": "trainer.models.finetune",
    "encoder_of": "trainer.models.finetune",
    "NORMALIZATIONS": "trainer.models.layers",
}

__all__ = [
    "BACKBONES",
    "BACKBONE_INFO",
    "NORMALIZATIONS",
    "STRIDES",
    "backbone_info",
    "build_unet",
    "encoder_of",
    "keras_cache_dir",
    "outputs_logits",
    "resolve_weights",
    "set_encoder_trainable",
    "with_probabilities",
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'trainer.models' has no attribute {name!r}")
