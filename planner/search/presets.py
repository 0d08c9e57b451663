"""The planner's presets, as data: what to try by default and how to score it.

Nothing here computes; `planner.search.candidates` and `planner.search.choose` read these values.
Change a default here, not in code. The figures marked "measured" come from this
machine (2-core AVX512-BF16 CPU, TF 2.21, Keras 3.15): see docs/planning.md for the
commands. The quality priors: mobilenet_v3_small against efficientnet_b0 is measured
(`benchmarks/backbones.py`, `Objective.backbone_prior`); the other backbones' priors and
the size exponent are judgement, documented as such.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GIB = 2**30

# -- candidates -------------------------------------------------------------------------

# Few on purpose: each (backbone, size, precision) costs two children (one per trial
# size), 10-40 s each on this CPU.
DEFAULT_BACKBONES: tuple[str, ...] = ("mobilenet_v3_small", "efficientnet_b0")
# Square crop sides to try, kept only where they fit in the images (multiples of 32).
DEFAULT_SIDES: tuple[int, ...] = (256, 384)
ALL_SIDES: tuple[int, ...] = (128, 192, 256, 320, 384, 448, 512)

# Precision options by device, preferred first. Default candidates use only the first;
# the rest are options (`--precisions`) whose trials measure them like any candidate.
# On this CPU (AVX512_BF16, TF 2.21) bfloat16 *training* of conv U-Nets was far slower
# than float32, though matmuls are faster: Conv2D backprop in bfloat16 took 16-24x the
# float32 time (conv 4x128x128x96, 3x3), and the MobileNetV3Small U-Net stepped 7x
# slower at 256x256 (docs/planning.md, "Calibration"), for only ~10% less memory.
# So float32 stays first on a CPU even with bf16. mixed_float16 on a CPU was 5.7x slower
# (MEASURED.md): never offered there.
PRECISIONS: dict[str, tuple[str, ...]] = {
    "cpu": ("float32",),
    "cpu_bf16": ("float32", "mixed_bfloat16"),
    "gpu": ("mixed_float16", "float32"),
    "gpu_bf16": ("mixed_bfloat16", "mixed_float16", "float32"),
}

# -- trials -----------------------------------------------------------------------------

# Sizes measured for the fit, each in its own fresh child (`planner.trials.trial.measure_each`):
# a spread of 4x (1 and 2 is noise, measured). Measured in one child, the second size
# carried the first's leftovers and a relaxed-shape retrace, and the line through them
# over-predicted larger sizes by 10-26%.
TRIAL_MICRO_BATCHES: tuple[int, ...] = (1, 4)
# The leader's second size is skipped above the size measured when the plan still fits
# with the peak's slope this many times the analytic one (planner.measure_order:
# upper_line): replaying 8 idle epfl-em trial points, the analytic slope through the
# measured size was 0.76-1.30x the measured slopes (docs/planning.md, "Trials").
SECOND_SIZE_SLOPE_MARGIN = 1.5
# Steps per trial size: the first traces, the second still allocates (optimizer slots);
# the step time is the median of the measured ones. Was 3 + 5: 3 steps fewer cut
# 1-15 s per child on the 2-vCPU EPYC (0.4-4.9 s per step at micro-batch 1-4 on
# epfl-em); the plan's peak is the verification run's, measured anyway.
TRIAL_WARMUP_STEPS = 2
TRIAL_MEASURED_STEPS = 3
# A child that has not finished by then is killed: tracing alone takes 14-31 s here.
TRIAL_TIMEOUT_S = 300.0
# The verification run (planner/trials/verify_run.py): optimizer updates (each of
# `accumulation_steps` micro-batches), validation batches at most (the peak depends on the
# batch, not the count), and its time limit: TensorFlow's start-up, the real pipeline's
# first batches, two traces (train and validation) and one checkpoint write.
VERIFY_UPDATES = 2
# A plan from the estimate alone (`--auto`, no room for a trial child) takes its step time
# from its verification run: that run trains at least this many micro-batches, and the
# median of those after the first is the step time. One timed step (stop 21, epfl-em
# 256x256 at 4, streamed) read 2.09-3.06 s where the run's steady state was 1.58 s: the
# input pipeline is still filling right after the trace.
VERIFY_TIMED_MICRO_BATCHES = 5
VERIFY_VALIDATION_BATCHES = 8
VERIFY_TIMEOUT_S = 600.0
# What a long run adds to the verification run's peak (malloc arenas capped and trimmed,
# docs/runs.md). Highest epoch peak over the verification run's peak, 2-vCPU EPYC AVX2
# (docs/planning.md, "The verification run and a long run"): one epoch +2.0..+6.6% over
# nine plans (epfl-em, the demo set, 12-class RGB at 3/4/6 GiB); long runs +6.8% (epfl-em,
# 3 epochs), +8.4% (epfl-em, 20 minutes, 4 epochs), +9.1% (demo, 10 epochs), +11.4%
# (epfl-em 4 GiB, efficientnet_b0 384 4 x 4, 20 minutes, 6 epochs: 3720, 3824, 3926 MB,
# then flat; 2026-12-03, stop 20), +13.2% (epfl-em 4 GiB, efficientnet_b0 256 4 x 1 in RAM,
# 20 minutes, 7 epochs: 2182, 2243, 2249, 2291 MiB x4 over a 1914 MiB verification run and
# a 125 MiB cache; 2026-12-04, stop 26).
# Those figures were measured with TensorFlow's default CPU allocator. Since stop 29 every
# process that trains or measures uses TensorFlow's BFC allocator for CPU tensors
# (`trainer.train.memory.use_tf_cpu_bfc`; docs/runs.md). Measured with it on the 2-vCPU
# EPYC with AVX-512 (2026-12-05, docs/planning.md, "stop 29"), over the verification run
# and the cache: nine one-epoch peaks -0.2..+4.8%; 20-minute runs +5.4% (efficientnet_b0
# 384, 4 x 4) and +11.6% (efficientnet_b0 384, 4 x 1: +6.6% in epoch 1, then up to epoch
# 18); `fitplan demo` +1.5%. No single figure puts all of them within 5% of the
# prediction: 3% (tried) fits the nine one-epoch peaks and leaves the 4 x 1 run 7.8% over
# it; 6.5% fits the three long runs and 4 of the 9 one-epoch peaks; 7%, 2 of 3 and 3 of 9.
# Why (stop 30, docs/runs.md, "Where a long run's rise comes from"): the memory outside
# tensors stays flat; the BFC pool's resident part is the highest tensor peak of any step
# so far, and that differs from step to step by up to ~10% with fixed shapes, so the run's
# peak grows with the number of steps it has seen (2-5 in verification, ~30 in an epoch
# of epfl-em, ~540 in 20 minutes). The verification run records each step's tensor peak
# (`tensor_step_peak_bytes`), the sample a per-plan figure would start from. Measured on
# epfl-em's 4 GiB plan and the demo's (+4.7% alone; +8.7% under `fitplan demo`, where the
# planning process holds about 48 MiB more).
# Two figures, because one cannot be both a prediction and a guarantee:
# - RUN_GROWTH, the expected rise: `prediction.peak_bytes` = run peak x (1 + 0.07), the
#   middle of that spread, unchanged at stop 29 (a plan is judged over the whole run). It
#   was 0.05 until stop 20's 20-minute run came out 5.7% over it.
# - RUN_GROWTH_BOUND, the highest rise measured plus a point: `prediction.bound_bytes`.
#   It was 0.125 (from +11.4%) until stop 26's 20-minute run rose +13.2%, 0.5% over it.
#   The verification run is held to budget / (1 + RUN_GROWTH_BOUND) (87.3%) or the
#   user's headroom if wider (`verified_headroom`), so the bound stays inside the budget:
#   what keeps a long run under it.
RUN_GROWTH = 0.07
RUN_GROWTH_BOUND = 0.145

# Since stop 31 a CPU plan's expected rise depends on the run's length (`trainer.peak`):
# the verification run's highest tensor peak per step x GROWTH_PER_E_FOLD x ln(steps /
# the verification run's steps), written into `prediction.growth` so that `fitplan train`
# predicts the run it trains (`--max-epochs 1` as well as the planned 20 minutes).
# RUN_GROWTH stays where no tensor peaks were recorded (a GPU: nothing measured there yet;
# a verification run cached before stop 30) and as the step-up's threshold.
# GROWTH_PER_E_FOLD fitted on the 2-vCPU AMD EPYC with AVX-512 with
# `benchmarks/growth_fit.py` (docs/planning.md, "The rise as a function of steps"): the
# constant with the smallest largest error over four long runs, each implying (rise over
# the verification run and the cache / its highest tensor peak / ln(steps / verified)):
# - epfl-em 4 GiB / 20 min, mobilenet_v3_small 384 8 x 1 (stop 31: T 1872 MiB over 2
#   verified steps; 435 steps, +152 MiB, flat from step 165): 0.015;
# - epfl-em 4 GiB / 20 min, efficientnet_b0 384 4 x 1 (T 1827 MiB, from stop 31's plan of
#   the same configuration): stop 30's run, 510 steps, +321 MiB: 0.032; stop 29's, 540
#   steps, +360 MiB: 0.035;
# - the demo's mobilenet_v3_small 128 8 x 1 trained alone (stop 30: T 255 MiB over 5
#   steps; 180 steps, +56 MiB): 0.061.
# At 0.025 the four predictions are -3.0% to +3.1% of the highest epoch peaks. The
# plans differ by a factor of two (efficientnet_b0's steps spread more than
# mobilenet_v3_small's at the same tensor peak): one constant is what the verification
# run's few steps can support. Stop 31 first set 0.035 from the last three runs; the
# mobilenet_v3_small run then peaked lower: that prediction was 6.2% over it.
# Checked after the fit (stop 31): nine one-epoch runs (three datasets at 3, 4 and 6 GiB),
# predictions -0.8% to +4.6% of their peaks; a 20-minute run of the efficientnet_b0 384
# 4 x 1 plan, 540 steps, +385 MiB (implied 0.037), the prediction 3.6% under its peak.
# Over all five long runs the fit would give 0.026.
# 0.025 x ln(1000 / 2) = 15.5% of the tensor peak at most: under RUN_GROWTH_BOUND for any
# plan whose tensors are under 93% of its verification peak (epfl-em's: 61-64%); where the
# expected peak over the planned steps would pass the budget anyway, verification steps
# down (`memory_model.verify`, `over`).
# GROWTH_MAX_STEPS: the curve is held flat past the longest runs measured (stop 27's 960
# steps over 20 minutes, flat after epoch 23); longer runs are not measured.
GROWTH_PER_E_FOLD = 0.025
GROWTH_MAX_STEPS = 1000


def verified_headroom(headroom: float) -> float:
    """The share of the budget a verification run may not use: the user's headroom, or
    what the highest measured long-run growth needs (`RUN_GROWTH_BOUND`), the larger."""
    return max(headroom, RUN_GROWTH_BOUND / (1 + RUN_GROWTH_BOUND))


# Verification steps up once (`memory_model.step_up`) when its measured peak with the
# expected RUN_GROWTH added is below this share of the budget: the goal is a run peak between 85%
# and 100% of the budget wherever a larger micro-batch is still useful (issue 13, 3).
STEP_UP_BELOW = 0.85

# -- memory -----------------------------------------------------------------------------

# Share of the budget kept free; covers the ~4% RSS growth from step 3 to step 20
# (measured) plus noise between runs.
HEADROOM = 0.10
MAX_MICRO_BATCH = 64

# Memory a real training run uses beyond the trial's train-step peak at the same
# micro-batch, estimated before the verification run measures it (it only guides the
# choice and pruning; the plan's prediction is the verification run's own peak). Two
# parts (stop 28; docs/planning.md, "The training-overhead estimate"):
# - TRAINING_OVERHEAD_BYTES: what every run adds (the tf.data pipeline, the validation
#   pass, callbacks, the checkpoint write). Measured by the verification runs of plans
#   without accumulation (2-vCPU AMD EPYC, AVX-512, stop 27): efficientnet_b0 16 x 1
#   178 and 271 MiB, mobilenet_v3_small 4-16 x 1 -26 to 49 MiB; the largest part of
#   efficientnet_b0's was its checkpoint write into memory, which stop 28 removed
#   (`trainer.train.run_dir.write_weights`). 0.25 GiB covers all of those.
#   Until stop 28 one 0.5 GiB term held both parts, fitted on efficientnet_b0 plans that
#   all accumulated (0.45-0.60 GiB at micro-batch 1, 3 and 7), and it over-stated
#   mobilenet_v3_small's plans without accumulation by ~0.45 GiB, which cost a trial child.
# - ACCUMULATION_PARAM_COPIES: what Keras' gradient accumulation adds to the train step,
#   which trials (accumulation 1) do not measure, in float32 copies of the parameters.
#   Measured (synthetic tensors, one process per arm, peak RSS, accumulation k against
#   1 at the same micro-batch): mobilenet_v3_small 256 (4.27M parameters) +141 MiB at
#   4 x 4, +147 at 2 x 2, +155 at 2 x 8; efficientnet_b0 (10.1M) +339 MiB at 256 4 x 4,
#   +257 at 384 4 x 4: 6.7-9.5 copies, the same for any k >= 2, so 8. The accumulators
#   are one copy; the rest is what the conditional update step holds at once. On a GPU
#   not measured: the accumulators alone (1 copy), and no run overhead (the pipeline
#   lives in host RAM, outside the allocator peak the plan predicts).
# A cache of decoded pairs (plan data.cache = "memory") comes on top (`build.cache_bytes`).
TRAINING_OVERHEAD_BYTES: dict[str, int] = {"cpu": int(0.25 * GIB), "gpu": 0}
ACCUMULATION_PARAM_COPIES: dict[str, int] = {"cpu": 8, "gpu": 1}
# The trainer caches images as float32: 4 bytes per decoded channel (the scan's count:
# alpha dropped, grey one channel; a 16-bit sample is counted once and also takes 4).
# Masks are cached as class indices, 1 byte each up to 256 classes (`build.cache_bytes`).
# Until stop 26 every byte, masks and alpha included, counted 4: on epfl-em (768x1024, 23
# LA and 4 RGBA slices) that predicted 267 MiB for a cache of 125 MiB (`train --auto` on
# mitochondria: epoch peaks 155-209 MiB over the verification run, the growth included).
CACHE_BYTES_PER_IMAGE_BYTE = 4

# Analytic estimate (no TensorFlow), used only to prune what cannot fit at micro-batch 1.
# Runtime overhead: peak RSS at micro-batch 0 minus 16 bytes per parameter, measured
# 0.76-1.17 GiB on CPU across the six backbones (docs/planning.md, "Calibration").
RUNTIME_OVERHEAD_BYTES: dict[str, int] = {"cpu": int(1.0 * GIB), "gpu": int(0.3 * GIB)}
# Bytes of training activations per input pixel per sample in float32: the slope of
# peak RSS over micro-batch divided by height x width (measured at 256x256, micro-batch
# 1 and 4, float32, Keras 3.15; docs/planning.md, "Calibration").
ACTIVATION_BYTES_PER_PIXEL: dict[str, float] = {
    "unet_small": 800.0,
    "mobilenet_v3_small": 1700.0,
    "mobilenet_v3_large": 2300.0,
    "efficientnet_b0": 2500.0,
    "efficientnetv2_b0": 1850.0,
    "resnet50": 2100.0,
}
# Activation bytes relative to float32 under each policy. mixed_bfloat16: 0.9, measured
# (MobileNetV3Small U-Net, 256x256: slope 94.7 vs 105.6 MiB per sample); float32
# variables, losses and casts keep it far from 0.5. mixed_float16 (GPU): assumed alike.
ACTIVATION_SCALE: dict[str, float] = {"float32": 1.0, "mixed_bfloat16": 0.9, "mixed_float16": 0.9}
# Float32 copies per parameter while training with Adam: weights, gradients, two moments.
PARAM_COPIES = 4
# Prune only when the estimate exceeds the allowed budget by this factor: the estimate
# is rough, and a wrongly pruned candidate is never measured.
PRUNE_TOLERANCE = 1.25


# -- the objective (planner.search.choose) ------------------------------------------------------


@dataclass(frozen=True)
class Objective:
    """How `planner.search.choose.choose` scores a feasible candidate.

    score = backbone_prior x size_prior x precision_prior x time_factor, with
    size_prior = (min(height, width) / size_reference) ** size_exponent and
    time_factor = min(1, epochs_possible / epochs_wanted) ** time_exponent
                  x min(1, updates_possible / updates_wanted) ** updates_exponent
    (1 without a time budget). Under a time budget whose updates at the target effective
    batch fall short of `updates_wanted`, the planner halves the effective batch (16, 8,
    4; never below `min_effective_batch`) unless the user set it (`planner.search.updates`).

    Args:
        backbone_prior: expected relative test quality per backbone, trained from
            scratch on a small dataset, apart from the time the budget buys. Measured
            for the two default backbones (stop 25, docs/benchmarks.md, "The priors,
            measured"): `benchmarks/backbones.py` trained each default candidate for
            10 minutes at effective batch 4 on epfl-em mitochondria and membranes
            (256 and 384) and on a 12-class RGB set at 360x480 (256), and the least-
            squares fit of test Dice / time factor over the 10 runs gives
            mobilenet_v3_small / efficientnet_b0 = 0.73 (per set 0.86, 0.63 and 0.70;
            rms log residual 0.18; one seed each). efficientnet_b0 keeps 0.95 (only
            ratios matter); the others are judgement placed where they were judged
            relative to those two (unet_small 0.93 x mobilenet_v3_small,
            mobilenet_v3_large half-way, efficientnetv2_b0 and resnet50 beside
            efficientnet_b0).
        precision_prior: quality cost of a precision policy.
        size_reference: the crop side whose size prior is 1.
        size_exponent: how much a larger crop (more context) is worth. Judgement: the
            same 10 runs do not determine it (fits of -0.08 on mitochondria and +1.19 on
            membranes; over both, rms log residual 0.177 at 0.15 and 0.161 at the best,
            0.55), so the judged 0.15 stays.
        epochs_wanted: epochs beyond which more time adds nothing to the score.
        min_epochs: fewer possible epochs than this rejects a candidate as too slow,
            unless no candidate reaches it.
        time_exponent: how steeply fewer epochs cost quality.
        max_epochs: the plan's epochs when time allows more (early stopping ends sooner).
        epoch_overhead: extra share of an epoch's training time for validation and
            callbacks.
        updates_wanted: optimizer updates beyond which more add nothing to the score; a
            time budget that buys fewer at the target effective batch lowers it.
            Judgement, not measured (docs/planning.md, "The objective"): a few hundred
            Adam updates, the point where a from-scratch U-Net has left its first
            plateau; `benchmarks/updates_ab.py` measures the trade on epfl-em.
        updates_exponent: how steeply fewer updates cost quality (as `time_exponent`).
        min_effective_batch: the effective batch is never lowered below this (BatchNorm
            statistics over fewer than 4 crops, and the gradient noise of a smaller
            batch, are judged not worth the extra updates).
    """

    backbone_prior: dict[str, float] = field(
        default_factory=lambda: {
            "unet_small": 0.64,
            "mobilenet_v3_small": 0.69,  # measured: 0.73 x efficientnet_b0
            "mobilenet_v3_large": 0.82,
            "efficientnet_b0": 0.95,
            "efficientnetv2_b0": 0.95,
            "resnet50": 0.93,
        }
    )
    precision_prior: dict[str, float] = field(
        default_factory=lambda: {"float32": 1.0, "mixed_bfloat16": 0.99, "mixed_float16": 0.99}
    )
    size_reference: int = 256
    size_exponent: float = 0.15
    epochs_wanted: int = 30
    min_epochs: int = 15
    time_exponent: float = 0.5
    max_epochs: int = 100
    epoch_overhead: float = 0.15
    updates_wanted: int = 300
    updates_exponent: float = 0.5
    min_effective_batch: int = 4


DEFAULT_OBJECTIVE = Objective()
# The effective batch the planner aims at (and the learning rate is written for). Under a
# short time budget it may lower it (Objective.updates_wanted), unless --effective-batch
# was given; the plan then scales the rate by sqrt(B / 16) (planner.build).
TARGET_EFFECTIVE_BATCH = 16

# -- make_plan --------------------------------------------------------------------------

# Under a time budget, stop starting new trial children once planning has used this
# share of it: the rest is for training.
PLANNING_SHARE = 0.35
# Under `train --auto`, planning's whole share of the time budget (10 minutes -> 60 s):
# candidates ranked best first, cached points, a single trial size and the analytic
# slope when time is short; what it could not measure is said (planner.make_plan).
AUTO_PLANNING_SHARE = 0.10
# Train-step cost per sample-pixel relative to mobilenet_v3_small, float32, per device
# (planner/time_bound.py): once one candidate is measured, the others' step times are
# estimated from it, and a candidate whose score at TIME_BOUND_MARGIN x that estimate
# cannot beat a measured one is not measured. Measured on the 2-vCPU AMD EPYC (AVX2, no
# AVX-512), TF 2.21, epfl-em trials at micro-batch 4 (2026-12-03, commit 786df6b, idle):
# efficientnet_b0 7.75e-6 s (256x256) and 8.32e-6 s (384x384) per sample-pixel,
# mobilenet_v3_small 4.46e-6 and 4.92e-6: ratio 1.69-1.74 (1.72 in the 6 GiB epfl-em plan
# of the same day). The other backbones have no step time measured on this CPU (the
# "Calibration" table in docs/planning.md times whole children, traces included), so
# they keep the time factor at 1 and are never skipped on time; so is every backbone
# on a GPU (nothing measured there).
RELATIVE_STEP_COST: dict[str, dict[str, float]] = {
    "cpu": {"mobilenet_v3_small": 1.0, "efficientnet_b0": 1.7},
}
# The bound takes the step time at least this share of the estimate: a 1/0.8 = 1.25x
# error in the relative cost or the pixel scaling still never skips a candidate that can
# win (measured spread on an idle machine: 256 vs 384 crops differ by 7-10% per pixel,
# the ratio by 3%; the calibration takes the fastest point measured). Replaying the
# epfl-em 4 GiB / 20 min trials (cold.json above) through the planner, 0.8 skips both
# efficientnet_b0 candidates (bounds 0.520 and 0.525 < 0.578); 0.7 measured 384x384.
TIME_BOUND_MARGIN = 0.8
# Before anything is measured, the order of measuring (never a skip) on a CPU uses
# mobilenet_v3_small's seconds per sample-pixel at micro-batch 4 measured on the 2-vCPU
# EPYC (4.46-4.92e-6 above), scaled by CPU_GUESS_CORES / the usable cores.
CPU_STEP_S_PER_PIXEL_GUESS = 4.7e-6
CPU_GUESS_CORES = 2
# Before the first child of a run has been timed: what one trial child is guessed to take
# (a TensorFlow import, a model build, a trace and 5 steps; 10-40 s on a 2-core CPU).
TRIAL_CHILD_GUESS_S = 25.0
# The verification run is guessed to take this many trial children (a second trace for
# validation, the real pipeline, a checkpoint): the share of the cap kept for it.
VERIFY_CHILD_EQUIVALENTS = 1.5
# Under `--auto` the verification child's time limit follows the planning time left,
# but never below this: a verification cut short leaves no plan and nothing trains.
VERIFY_MIN_TIMEOUT_S = 180.0
# Cache decoded pairs in RAM (plan data.cache = "memory") only when they take at most this
# share of the memory the chosen micro-batch leaves unused under the allowed budget.
CACHE_SHARE_OF_SPARE = 0.5
