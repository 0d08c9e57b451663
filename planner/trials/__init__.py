"""Trials: short dry runs of the trainer's own model and train step, each in a child process.

Owns: `spec` (what a child is asked to measure and what it answers), `trial` (starting,
watching and killing children; the parent side), `child` (the child's entry point, the
only module here that imports TensorFlow, and only inside the child).
May import: `trainer` (the child builds what will really train), `trainer.oom`.
Never imports `planner.search` or `planner.app`.
"""
