"""fitplan's trainer: builds a model, a data pipeline and a training loop from a `Plan`.

It knows nothing about planning and never imports `planner`. TensorFlow is imported
lazily by the modules that need it, so `import trainer` stays cheap.
"""

from trainer.errors import FitplanError
from trainer.plan import Plan, load_plan, save_plan

__all__ = ["FitplanError", "Plan", "load_plan", "save_plan"]
