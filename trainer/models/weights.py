"""Where encoder weights come from, checked before any training work starts.

Asked for `weights="imagenet"`, we look for the file Keras would have cached
(`$KERAS_HOME/models`). When it is absent we download it once, before any data is
loaded, through Keras' own mechanism (`keras.utils.get_file` with the MD5 Keras
publishes for that file) into that cache, atomically: into a temporary folder first,
renamed into place only after the hash matched. Offline (or with `FITPLAN_OFFLINE=1`)
a missing file is a `WeightsError` naming the exact file and the directory to copy it
into; `pretrained_or_none` turns that into a one-line notice and a from-scratch plan
for the planner. The file found is passed to `keras.applications` as
`weights=<path>`, so Keras never reaches for the network while building.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from trainer.errors import WeightsError
from trainer.models.backbones import backbone_info

# Set to "1" to never download (tests, air-gapped hosts that would wait on DNS).
OFFLINE_ENV = "FITPLAN_OFFLINE"

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


def resolve_weights(backbone: str, weights: str, *, download: bool = True) -> str | None:
    """The local weights file to load for `backbone`, or `None` for random weights.

    Call this before loading data or building anything: it is cheap and fails
    with a message that says what to do.

    Args:
        backbone: one of `BACKBONE_INFO`.
        weights: `"none"`: random initialisation (returns `None`); `"imagenet"`:
            the file Keras would download for this backbone with
            `include_top=False`, looked up in `$KERAS_HOME/models` (default
            `~/.keras/models`) and, when absent, downloaded there (`download`);
            anything else: a path to an encoder weights file
            (`.h5`, `.weights.h5`, `.keras`), `~` expanded, relative to the
            current directory.
        download: fetch a missing ImageNet file (`download_imagenet`). Defaults to
            `True`; `FITPLAN_OFFLINE=1` in the environment turns it off. Only a
            download imports Keras.

    Returns:
        An absolute path as a string, or `None`.

    Raises:
        WeightsError: the file is missing (and could not be downloaded), or
            `unet_small` was asked for ImageNet weights (it has none).
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
        return _imagenet_file(backbone, info, download)
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


def _imagenet_file(backbone: str, info: dict, download: bool) -> str:
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
    why = "downloads are off (FITPLAN_OFFLINE=1)"
    if download and os.environ.get(OFFLINE_ENV) != "1":
        try:
            return download_imagenet(backbone)
        except WeightsError as exc:
            why = exc.message
    raise WeightsError(
        f"ImageNet weights for {backbone!r} are not available offline: "
        f"{fname} not found in {dirs[0]} and not downloaded ({why})",
        hint=f"download {info['pretrained_url']}{fname} on a machine with internet access "
        f"and copy it to {dirs[0] / fname} (set KERAS_HOME to use another cache "
        "directory), or use weights='none'",
    )


def download_imagenet(backbone: str) -> str:
    """Download `backbone`'s no-top ImageNet file into the Keras cache; return its path.

    `keras.utils.get_file` fetches it with the hash Keras publishes
    (`BACKBONE_INFO[...]["pretrained_hash"]`) into a temporary folder inside the cache
    directory, and only a file whose hash matched is renamed into place, so neither a
    killed download nor a corrupt one is ever found in the cache as if complete.

    Raises:
        WeightsError: no pretrained file for this backbone; the download failed
            (offline, HTTP error) or the file's hash did not match.
    """
    info = backbone_info(backbone)
    fname = info["pretrained_file"]
    if fname is None:
        raise WeightsError(f"backbone {backbone!r} has no pretrained weights")
    import keras  # only here: resolve_weights stays free of TensorFlow otherwise

    cache = keras_cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=cache))
    except OSError as exc:
        raise WeightsError(f"cannot write the Keras cache {cache}: {exc}") from exc
    origin = info["pretrained_url"] + fname
    try:
        got = keras.utils.get_file(
            fname,
            origin=origin,
            file_hash=info["pretrained_hash"],
            cache_dir=str(tmp),
            cache_subdir="",
        )
        target = cache / fname
        os.replace(got, target)
        return str(target.resolve())
    except Exception as exc:  # get_file raises a bare Exception for network errors
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsError(f"downloading {origin} failed: {first}") from exc
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)


def pretrained_or_none(backbone: str, weights: str) -> tuple[str, str | None]:
    """The weights a plan can use for `backbone`, and a one-line notice when it cannot.

    For the planner (`--auto` never fails over weights): `"imagenet"` that is cached or
    can be downloaded stays `"imagenet"`; otherwise the plan trains from scratch
    (`"none"`) and the notice says why. Other values are returned unchanged.
    """
    if weights != "imagenet":
        return weights, None
    try:
        resolve_weights(backbone, weights)
    except WeightsError as exc:
        return "none", f"training {backbone} from scratch: {exc.message.split(' (')[0]}"
    return weights, None
