"""Data: pairs, decoding, masks, augmentation, integrity, splits and the tf.data pipeline.

Owns: `pairs` (pairing images with masks), `decode` (files to arrays), `masks` (class
values), `augment` (paired augmentation), `integrity` (the one rule for a readable image),
`digest` (dataset digest), `splits` (validation split and epoch arithmetic; pure Python),
`pipeline` (the tf.data datasets the trainer and the trials feed from).
May import: `trainer.plan`, `trainer.errors`, `trainer.atomic`. TensorFlow only in
`decode`, `augment` and `pipeline`, imported there.
"""
