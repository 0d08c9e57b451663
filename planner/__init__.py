"""fitplan's planner: probes hardware, scans datasets, measures dry runs and writes a plan.

Stages, in the order data moves through them (each subpackage's `__init__` says what it
owns and may import):

    hardware/   NVML GPUs, host RAM and the container limit, CPU, disk -> a memory budget
    scan/       pair images with masks, check every file, mask values, fingerprint
    search/     candidates, presets, the memory model and the choice (pure: no TensorFlow)
    trials/     child processes that run the trainer's own train step and measure it
    make_plan   the one orchestrator: probe -> scan -> candidates -> trials -> choose
                -> verify -> plan; with `request` (its frozen inputs and context),
                `verified_choice` (choose, verify in a child, step down) and `build`
                (the plan document from the verified choice)
    app/        the `fitplan` command line and what it renders (imports everything above)

It may import `trainer` (to measure what will really run); `trainer` never imports it
(ruff's banned-api and tests/test_boundaries.py hold that). The parent process never
imports TensorFlow: only trial children do.
"""
