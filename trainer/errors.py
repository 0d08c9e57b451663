"""The one exception hierarchy of fitplan.

Every error a user can cause (a bad file, a bad option, a budget too small) is a
`FitplanError`. The CLI catches `FitplanError` once, prints one line and exits with
the class's `exit_code`; anything else is a bug and keeps its traceback. The codes
are listed in docs/cli.md and must not change meaning once published.

It lives in `trainer` because both packages raise these and `trainer` must not
import `planner`.
"""

from __future__ import annotations


class FitplanError(Exception):
    """Base class: a problem the user can fix. Exit code 1."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class DataError(FitplanError):
    """The dataset is missing, empty, unreadable or has nothing trainable. Exit code 3."""

    exit_code = 3


class PlanError(FitplanError):
    """A plan file is not valid JSON or fails validation (names the field). Exit code 4."""

    exit_code = 4


class BudgetError(FitplanError):
    """No candidate fits the memory or time budget. Exit code 5."""

    exit_code = 5


class WeightsError(FitplanError):
    """Pretrained weights were asked for but are not available offline. Exit code 6."""

    exit_code = 6


class RunDirError(FitplanError):
    """A run directory cannot be created, resumed or read. Exit code 7."""

    exit_code = 7


class DiskFullError(FitplanError):
    """Writing a file failed for lack of space; the previous file was kept. Exit code 8."""

    exit_code = 8


class HardwareError(FitplanError):
    """The hardware cannot be probed or does not have what was asked for. Exit code 9."""

    exit_code = 9


class TrainingOOMError(FitplanError):
    """Training ran out of memory and could not step down further. Exit code 10."""

    exit_code = 10


class FitplanWarning(UserWarning):
    """Something the user should know that does not stop the work (the CLI prints
    one yellow line): a pair excluded from training, a plan made for other data or
    for more memory than this machine has now."""


EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "other fitplan error",
    2: "bad command-line usage (typer)",
    3: "dataset problem (DataError)",
    4: "invalid plan (PlanError)",
    5: "nothing fits the budget (BudgetError)",
    6: "pretrained weights not available (WeightsError)",
    7: "run directory problem (RunDirError)",
    8: "disk full while writing (DiskFullError)",
    9: "hardware problem (HardwareError)",
    10: "out of memory during training, no smaller micro-batch left (TrainingOOMError)",
    130: "interrupted (Ctrl-C)",
}
