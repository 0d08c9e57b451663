"""Using a trained run: load it, predict with blended tiles, evaluate, export.

Owns: `inference` (loading a run, reading images, predicting whole images), `tiling`
(overlapping tiles and their blend), `evaluate`, `predict`, `export`.
May import: `trainer.plan`, `trainer.errors`, `trainer.atomic`, `trainer.data`,
`trainer.models`, `trainer.train` (losses and the run folder). Never `planner`.
"""
