"""Where encoder weights come from, checked before any training work starts.

This machine (and many training hosts) is offline. Asked for `weights="imagenet"`,
Keras would try to download and fail with a bare `Exception` after the data is
loaded and the model built. Instead we look for the file Keras would have cached
ourselves and, when it is absent, raise `WeightsError` naming the exact file and
the directory to copy it into. The file found is later passed to
`keras.applications` as `weights=<path>`, so Keras never reaches for the network.
"""

from __future__ import annotations

import os
from pathlib import Path

from trainer.errors import WeightsError
from trainer.models.backbones import backbone_info

# Suffixes `keras.Model.load_weights` understands (legacy HDF5 or Keras 3 formats).
_WEIGHT_SUFFIXES = (".h5", ".hdf5", ".keras", ".weights.json")


def keras_cache_dir() -> Path:
    """The directory Keras caches downloaded weights in: `$KERAS_HOME/models`.

    Read from the environment at call time (Keras itself reads `KERAS_HOME` once
    at import). Without `KERAS_HOME` it is `~/.keras/models`.
    """
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home).expanduser() / "models"


def _cache_dirs() -> list[Path]:
    primary = keras_cache_dir()
    dirs = [primary]
    # Keras falls back to /tmp/.keras when the home directory is not writable, so a
    # file it downloaded earlier may sit there.
    home = primary.parent
    if not os.access(home if home.exists() else home.parent, os.W_OK):
        dirs.append(Path("/tmp/.keras/models"))
    return dirs


def resolve_weights(backbone: str, weights: str) -> str | None:
    """The local weights file to load for `backbone`, or `None` for random weights.

    Call this before loading data or building anything: it is cheap and fails
    with a message that says what to do.

    Args:
        backbone: one of `BACKBONE_INFO`.
        weights: `"none"`: random initialisation (returns `None`); `"imagenet"`:
            the file Keras would download for this backbone with
            `include_top=False`, looked up in `$KERAS_HOME/models` (default
            `~/.keras/models`); anything else: a path to an encoder weights file
            (`.h5`, `.weights.h5`, `.keras`), `~` expanded, relative to the
            current directory.

    Returns:
        An absolute path as a string, or `None`.

    Raises:
        WeightsError: the file is missing, or `unet_small` was asked for
            ImageNet weights (it has none).
        FitplanError: unknown backbone.
    """
    info = backbone_info(backbone)
    if weights == "none" or weights is None:
        return None
    if not isinstance(weights, str) or not weights:
        raise WeightsError(
            "`weights` must be 'none', 'imagenet' or a path to a weights file. "
            f"Received: weights={weights!r}"
        )
    if weights == "imagenet":
        return _imagenet_file(backbone, info)
    path = Path(weights).expanduser().resolve()
    if not path.is_file():
        raise WeightsError(
            f"weights file {str(path)!r} does not exist (backbone {backbone!r}). "
            f"Received: weights={weights!r}",
            hint="give the path of an encoder weights file, 'imagenet' or 'none'",
        )
    if not path.name.endswith(_WEIGHT_SUFFIXES):
        raise WeightsError(
            f"weights file {str(path)!r} must end with one of {', '.join(_WEIGHT_SUFFIXES)} "
            f"(the formats keras.Model.load_weights reads). Received: weights={weights!r}"
        )
    return str(path)


def _imagenet_file(backbone: str, info: dict) -> str:
    fname = info["pretrained_file"]
    if fname is None:
        raise WeightsError(
            f"backbone {backbone!r} has no pretrained weights. Received: weights='imagenet'",
            hint="use weights='none' (unet_small is trained from scratch) or a backbone "
            "such as 'mobilenet_v3_small'",
        )
    dirs = _cache_dirs()
    for d in dirs:
        candidate = d / fname
        if candidate.is_file():
            return str(candidate.resolve())
    raise WeightsError(
        f"ImageNet weights for {backbone!r} are not available offline: "
        f"{fname} not found in {dirs[0]}",
        hint=f"download {info['pretrained_url']}{fname} on a machine with internet access "
        f"and copy it to {dirs[0] / fname} (set KERAS_HOME to use another cache "
        "directory), or use weights='none'",
    )
