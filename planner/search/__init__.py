"""Search: candidates, presets, the memory model and the choice. Pure: no TensorFlow,
no processes, no clock, so every rule here is tested with exact answers and fake trials.

Owns: `presets` (defaults and priors), `candidates` (what to try, analytic pruning),
`memory_model` (the line through measured peaks, largest fitting size, verification),
`choice` (the result types), `choose` (scoring and picking among measured candidates).
May import: `planner.trials.spec` (the result type only), `trainer.plan`, `trainer.data.splits`,
`trainer.models.backbones`, `trainer.errors`.
"""
