"""The benchmark suites, as data: which configurations each suite measures.

Nothing here runs anything; `benchmarks/run.py` reads `SUITES`. Change a suite here,
and when a change alters the `ci` suite's configurations, update
`benchmarks/baseline/cpu.json` in the same commit (docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

ALL_BACKBONES: tuple[str, ...] = (
    "unet_small",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "efficientnetv2_b0",
    "resnet50",
)


@dataclass(frozen=True)
class MemoryMatrix:
    """Peak-memory configurations for each (backbone, input size, precision).

    Args:
        backbones: encoders to measure.
        sides: square input sides (multiples of 32).
        fit_micro_batches: sizes measured together in one child, exactly as the
            planner's trial (`planner.search.presets.TRIAL_MICRO_BATCHES`, (1, 4)); the line
            through them is the prediction.
        check_micro_batches: larger sizes, each measured in a fresh child as the
            planner's verification (`planner.trials.trial.measure_one`) and training run them.
            Not in the fit child: there a larger size reuses the relaxed-shape trace and
            the memory the smaller sizes left behind: the line over-predicted them by
            5-38% (docs/benchmarks.md).
        precisions: Keras dtype policies. float32 only on this CPU: bfloat16 conv
            training is 7-24x slower here (docs/planning.md).
        warmup_steps, measured_steps: per size, as the planner's trials
            (`planner.search.presets`), so the gate tracks what the planner measures.
        timeout_s: wall-clock limit of one child.
    """

    backbones: tuple[str, ...]
    sides: tuple[int, ...]
    fit_micro_batches: tuple[int, ...]
    check_micro_batches: tuple[int, ...]
    precisions: tuple[str, ...] = ("float32",)
    warmup_steps: int = 3
    measured_steps: int = 5
    timeout_s: float = 600.0


@dataclass(frozen=True)
class PipelineBench:
    """Training images/s from disk (tf.data: decode + augment) vs the same batches in memory."""

    backbone: str = "mobilenet_v3_small"
    side: int = 256
    micro_batch: int = 4
    # Per timed epoch; each source is timed `rounds` times, alternating. 10 x 2 gave
    # ratios from 0.81 to 1.10 between runs; 20 x 4 on an idle machine gave rounds
    # within 4% of each other (docs/benchmarks.md).
    steps: int = 20
    rounds: int = 4
    timeout_s: float = 1800.0


@dataclass(frozen=True)
class AccumulationBench:
    """Time per image at micro-batch m with k accumulation steps vs without."""

    backbone: str = "unet_small"
    side: int = 128
    micro_batch: int = 4
    accumulation_steps: int = 4
    cycles: int = 4  # timed optimizer updates: cycles x k micro-batch steps per child
    timeout_s: float = 600.0


@dataclass(frozen=True)
class StreamingBench:
    """Peak RSS of one streamed epoch over N, 2N, 4N, 8N synthetic pairs, a child each."""

    base_pairs: int = 48
    multiples: tuple[int, ...] = (1, 2, 4, 8)
    image_side: int = 512  # written images; crops of `crop_side`, 4 per image per epoch
    crop_side: int = 256
    micro_batch: int = 8
    timeout_s: float = 600.0


@dataclass(frozen=True)
class Suite:
    """What one `--suite` runs; `None` skips that benchmark."""

    description: str
    memory: MemoryMatrix | None = None
    pipeline: PipelineBench | None = None
    accumulation: AccumulationBench | None = None
    streaming: StreamingBench | None = None
    parts: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        names = ("memory", "pipeline", "accumulation", "streaming")
        object.__setattr__(self, "parts", tuple(n for n in names if getattr(self, n)))


# Four children (plus one for the baseline RSS) on the 2-core CPU: the CI gate.
CI_MEMORY = MemoryMatrix(
    backbones=("unet_small", "mobilenet_v3_small"),
    sides=(128,),
    fit_micro_batches=(1, 4),
    check_micro_batches=(8,),
)
FULL_MEMORY = MemoryMatrix(
    backbones=ALL_BACKBONES,
    sides=(256, 384),
    fit_micro_batches=(1, 4),
    check_micro_batches=(8, 16),
    timeout_s=1800.0,  # resnet50 at 384x384, micro-batch 16, on 2 shared cores
)

SUITES: dict[str, Suite] = {
    "ci": Suite("peak memory of 2 backbones at 128x128 (the CI gate)", memory=CI_MEMORY),
    "full": Suite(
        "peak memory of 6 backbones at 256 and 384, input pipeline, accumulation, streaming",
        memory=FULL_MEMORY,
        pipeline=PipelineBench(),
        accumulation=AccumulationBench(),
        streaming=StreamingBench(),
    ),
    "prediction": Suite(
        "prediction check at 256x256: 2 backbones, line through 1 and 4, fresh 8 and 16",
        memory=MemoryMatrix(
            backbones=("unet_small", "mobilenet_v3_small"),
            sides=(256,),
            fit_micro_batches=(1, 4),
            check_micro_batches=(8, 16),
        ),
    ),
    "pipeline": Suite("input pipeline throughput only", pipeline=PipelineBench()),
    "accumulation": Suite("accumulation overhead only", accumulation=AccumulationBench()),
    "streaming": Suite("streaming memory only", streaming=StreamingBench()),
    "extras": Suite(
        "pipeline, accumulation and streaming (the full suite without the memory matrix)",
        pipeline=PipelineBench(),
        accumulation=AccumulationBench(),
        streaming=StreamingBench(),
    ),
}
