"""fitplan's trainer: builds a model, a data pipeline and a training loop from a `Plan`.

It knows nothing about planning and never imports `planner`. TensorFlow is imported
lazily by the modules that need it, so `import trainer` stays cheap.
"""

from importlib import metadata

from trainer.errors import FitplanError
from trainer.plan import Plan, load_plan, save_plan

try:  # the installed distribution's version (pyproject.toml); a bare checkout has none
    __version__ = metadata.version("fitplan")
except metadata.PackageNotFoundError:  # pragma: no cover
    __version__ = "unknown"

__all__ = ["FitplanError", "Plan", "__version__", "load_plan", "save_plan"]
