"""`--callbacks MODULE:FACTORY`: the user's own Keras callbacks (MLflow, W&B, ...).

Light to import (Keras only once a factory has returned something), so the command
line checks the specs before TensorFlow starts: an unknown module is a usage error.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from trainer.errors import FitplanError


def load_callbacks(specs: Sequence[str]) -> list[Any]:
    """Import each `module:factory` and call the factory: a Keras callback or a list of them.

    The current folder is searched first, as `python -m` does, so a `my_callbacks.py`
    next to the data works. A factory takes no arguments (a Callback class qualifies).

    Raises:
        FitplanError: a spec is malformed, its module or factory cannot be imported, or
            the factory does not return Keras callbacks (message names the spec).
    """
    factories = [(spec, _resolve(spec)) for spec in specs]  # every import before any call
    import keras

    out: list[Any] = []
    for spec, factory in factories:
        try:
            made = factory()
        except Exception as exc:
            raise FitplanError(
                f"--callbacks {spec}: the factory failed ({type(exc).__name__}: {exc})"
            ) from exc
        made = list(made) if isinstance(made, (list, tuple)) else [made]
        bad = [m for m in made if not isinstance(m, keras.callbacks.Callback)]
        if bad:
            raise FitplanError(
                f"--callbacks {spec}: the factory must return a keras.callbacks.Callback "
                f"(or a list of them). Received: {type(bad[0]).__name__}"
            )
        out.extend(made)
    return out


def _resolve(spec: str) -> Callable[[], Any]:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise FitplanError(
            f"--callbacks must be MODULE:FACTORY, e.g. my_callbacks:make. Received: {spec!r}"
        )
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise FitplanError(
            f"--callbacks {spec}: cannot import {module_name!r} ({type(exc).__name__}: {exc})",
            hint="the module must be importable from the current folder or the environment",
        ) from exc
    finally:
        if added:
            sys.path.remove(cwd)
    factory = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise FitplanError(f"--callbacks {spec}: {module_name!r} has no {attr!r}")
    if not callable(factory):
        raise FitplanError(f"--callbacks {spec}: {attr!r} is not callable")
    return factory
