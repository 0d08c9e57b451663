"""Training: set up the model, loss and optimizer from a plan, fit, and keep the run folder.

Owns: `setup` (model + optimizer + loss from a plan), `losses`, `fit` (the training loop
around Keras `fit`, OOM step-down, freeze then fine-tune), `callbacks`, `run_dir`
(checkpoints, history, resume state), `progress`, `preflight` (checks before the first
step), `memory` (peak RSS and allocator peaks), `cgroup` (a container's memory
limit, read for preflight and for the planner's probe), `distribute`/`distribute_keras`
(tf.distribute strategies).
May import: `trainer.plan`, `trainer.errors`, `trainer.atomic`, `trainer.oom`,
`trainer.data`, `trainer.models`. Never `trainer.use` or `planner`.
"""
