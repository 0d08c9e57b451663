"""Paired augmentation: one random geometric transform for image and mask, colour for the image.

A training sample is a crop of `input_size / zoom` pixels taken at native resolution
(after `data.image_scale`), with a random flip, quarter turn and small rotation, all
composed into **one** affine map from output pixel to input pixel. Image and mask are
both sampled through that same map by `ImageProjectiveTransformV3` (bilinear for the
image, nearest for the mask, reflected at the border), so they cannot drift apart,
only `input_size` pixels are ever computed, and mask values stay class indices. A
quarter turn rotates the crop's footprint in the source image, so it also works for
non-square crops. An image smaller than the footprint is sampled more densely: that
is resizing it up, keeping its aspect ratio, so the crop fits.

Randomness is stateless: every crop carries its own seed, so a crop's content does not
depend on the order in which parallel workers produce it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tensorflow as tf

from trainer.data.decode import as_rgb
from trainer.plan import AugmentSpec


@dataclass(frozen=True)
class AugmentSettings:
    """The effective augmentation (an `AugmentSpec` with its preset applied)."""

    hflip: bool
    vflip: bool
    rot90: bool
    rotate_deg: float
    scale: tuple[float, float]
    brightness: float
    contrast: float

    @classmethod
    def from_spec(cls, spec: AugmentSpec) -> AugmentSettings:
        r = spec.resolved()
        return cls(
            hflip=bool(r["hflip"]),
            vflip=bool(r["vflip"]),
            rot90=bool(r["rot90"]),
            rotate_deg=float(r["rotate_deg"]),
            scale=(float(r["scale"][0]), float(r["scale"][1])),
            brightness=float(r["brightness"]),
            contrast=float(r["contrast"]),
        )


NONE = AugmentSettings(False, False, False, 0.0, (1.0, 1.0), 0.0, 0.0)


def random_params(
    seed: tf.Tensor, image_hw: tf.Tensor, n: tf.Tensor, out_hw: tuple[int, int], s: AugmentSettings
) -> tuple[tf.Tensor, tf.Tensor]:
    """`n` random crops of one image: their affine maps and photometric changes.

    Vectorised over the crops: drawing each crop's parameters in scalar ops costs
    more in per-op overhead (about 1 ms a crop measured) than the warp itself.

    Args:
        seed: int `[2]` stateless seed; the same seed (and `n`) gives the same crops.
        image_hw: the source image's (height, width).
        n: number of crops.
        out_hw: the crops' output size, `input_size`.
        s: the augmentation settings.

    Returns:
        `transforms` float32 `[n, 8]`, each the output->input map in the layout
        `ImageProjectiveTransformV3` takes, and `photo` float32 `[n, 2]`: contrast
        factor and brightness offset.
    """
    u = tf.random.stateless_uniform(tf.stack([tf.cast(n, tf.int32), 9]), seed, dtype=tf.float32)
    h, w = tf.cast(image_hw[0], tf.float32), tf.cast(image_hw[1], tf.float32)
    ho, wo = float(out_hw[0]), float(out_hw[1])
    lo, hi = math.log(s.scale[0]), math.log(s.scale[1])
    # Log-uniform zoom: 0.8 and 1.25 are equally likely departures from 1.
    zoom = tf.exp(lo + (hi - lo) * u[:, 0])
    k = (
        tf.cast(tf.floor(u[:, 1] * 4.0), tf.int32) % 4
        if s.rot90
        else tf.zeros_like(u[:, 1], tf.int32)
    )
    theta = (2.0 * u[:, 2] - 1.0) * (s.rotate_deg * math.pi / 180.0)
    sx = tf.where(u[:, 3] < 0.5, -1.0, 1.0) if s.hflip else tf.ones_like(u[:, 3])
    sy = tf.where(u[:, 4] < 0.5, -1.0, 1.0) if s.vflip else tf.ones_like(u[:, 4])

    # Footprint of the crop in the source: a quarter turn swaps its sides.
    odd = tf.equal(k % 2, 1)
    rw, rh = tf.where(odd, ho, wo), tf.where(odd, wo, ho)
    # Source pixels per output pixel. min(w / rw, h / rh) is 1 / `splits.upsize_factor` of
    # the footprint: a smaller image is sampled more densely, i.e. resized up as validation
    # and prediction do. Written in tensors because the footprint is per crop (zoom,
    # quarter turn); test_augment holds the two equal.
    step = tf.minimum(1.0 / zoom, tf.minimum(w / rw, h / rh))
    fw, fh = rw * step, rh * step
    # Integer starts keep the samples on pixel centres at zoom 1: no blur, exact masks.
    x0 = tf.floor(u[:, 5] * (tf.floor(w - fw) + 1.0))
    y0 = tf.floor(u[:, 6] * (tf.floor(h - fh) + 1.0))
    cx, cy = x0 + fw / 2.0 - 0.5, y0 + fh / 2.0 - 0.5

    # Exact cos/sin for quarter turns (no 6e-17 residue), composed with the small angle.
    ck = tf.gather([1.0, 0.0, -1.0, 0.0], k)
    sk = tf.gather([0.0, 1.0, 0.0, -1.0], k)
    c = ck * tf.cos(theta) - sk * tf.sin(theta)
    sn = sk * tf.cos(theta) + ck * tf.sin(theta)
    a00, a01 = step * c * sx, -step * sn * sy
    a10, a11 = step * sn * sx, step * c * sy
    ox, oy = (wo - 1.0) / 2.0, (ho - 1.0) / 2.0
    a2 = cx - a00 * ox - a01 * oy
    b2 = cy - a10 * ox - a11 * oy
    zero = tf.zeros_like(a00)
    transforms = tf.stack([a00, a01, a2, a10, a11, b2, zero, zero], axis=1)

    factor = 1.0 + s.contrast * (2.0 * u[:, 7] - 1.0)
    delta = s.brightness * (2.0 * u[:, 8] - 1.0)
    return transforms, tf.stack([factor, delta], axis=1)


def warp(x: tf.Tensor, transform: tf.Tensor, out_hw: tuple[int, int], nearest: bool) -> tf.Tensor:
    """Sample `x` (`[H, W, C]`) through `transform` into `out_hw`, reflecting at the border."""
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=x[None],
        transforms=transform[None],
        output_shape=tf.constant(out_hw, tf.int32),
        fill_value=tf.constant(0.0),
        interpolation="NEAREST" if nearest else "BILINEAR",
        fill_mode="REFLECT",
    )
    return out[0]


def photometric(image: tf.Tensor, photo: tf.Tensor) -> tf.Tensor:
    """Contrast `photo[0]` about the image mean, then brightness `photo[1]` times the
    image's range (max - min), clipped to [0, 1].

    One factor and one offset for all channels, so a grey image stays grey. The offset is
    relative to the range, not absolute: 12-bit data left in [0, 0.06] (`normalization:
    none`) shifts by a fraction of its own span instead of being pushed to 0 or to a flat
    0.15. Images spanning [0, 1] (8-bit, or percentile-normalised) see the plain offset.
    """
    span = tf.reduce_max(image) - tf.reduce_min(image)
    offset = tf.reduce_mean(image) * (1.0 - photo[0]) + photo[1] * span  # (x - m) f + m + d r
    return tf.clip_by_value(image * photo[0] + offset, 0.0, 1.0)


def apply_augment(
    image: tf.Tensor,
    mask: tf.Tensor,
    transform: tf.Tensor,
    photo: tf.Tensor,
    out_hw: tuple[int, int],
    settings: AugmentSettings,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Cut one crop given its parameters (from `random_params`).

    Args:
        image: float32 `[H, W, C]` in [0, 1], `C` 1 (grey) or 3.
        mask: class indices `[H, W, 1]` (an integer dtype the warp takes, e.g. uint8).
        transform: float32 `[8]`, the crop's output->input map.
        photo: float32 `[2]`, its contrast factor and brightness offset.
        out_hw: output (height, width), the plan's `input_size`.
        settings: decides whether the photometric step runs at all.

    Returns:
        The image crop, float32 `[*out_hw, 3]` (grey is replicated only now, after the
        warp: a third of the work), and the mask crop in `mask`'s dtype.
    """
    image = warp(image, transform, out_hw, nearest=False)
    mask = warp(mask, transform, out_hw, nearest=True)
    if settings.brightness > 0 or settings.contrast > 0:
        image = photometric(image, photo)
    image = tf.ensure_shape(as_rgb(image), [*out_hw, 3])
    mask = tf.ensure_shape(mask, [*out_hw, 1])
    return image, mask


def augment_pair(
    image: tf.Tensor,
    mask: tf.Tensor,
    seed: tf.Tensor,
    out_hw: tuple[int, int],
    settings: AugmentSettings,
) -> tuple[tf.Tensor, tf.Tensor]:
    """One random training crop of a decoded pair (`random_params` + `apply_augment`).

    Args:
        image: float32 `[H, W, C]` in [0, 1], `C` 1 (grey) or 3.
        mask: class indices `[H, W, 1]` (an integer dtype the warp takes, e.g. uint8).
        seed: int `[2]` stateless seed; the same seed gives the same crop.
        out_hw: output (height, width), the plan's `input_size`.
        settings: the augmentation; `NONE` still crops (at zoom 1), nothing else.
    """
    transforms, photo = random_params(seed, tf.shape(image)[:2], 1, out_hw, settings)
    return apply_augment(image, mask, transforms[0], photo[0], out_hw, settings)
