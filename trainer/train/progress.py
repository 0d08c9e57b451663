"""A live training bar on stderr (rich): epoch, step, loss, Dice, images/s, epoch time left.

The line per finished epoch (validation scores, learning rate, peak memory, the run's
ETA bounded by the time limit) is `trainer.train.tracking.EpochLog`'s, on the `fitplan`
logger: the command line prints it above this bar and `train.log` keeps it.
"""

from __future__ import annotations

import time

import keras
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class RichProgress(keras.callbacks.Callback):
    """Keras callback drawing one progress bar per run: steps of the epoch, images/s.

    Args:
        epochs: the plan's maximum epochs; `0`: read from `fit` (train --auto).
        console: where to draw. Defaults to a stderr console, so `--json` stdout stays clean.
        images_per_step: images in one step (micro-batch x replicas) for the images/s
            figure; `None`: steps/s instead.
    """

    def __init__(
        self, epochs: int, console: Console | None = None, images_per_step: int | None = None
    ):
        super().__init__()
        self.epochs = epochs
        self.console = console or Console(stderr=True)
        self.images_per_step = images_per_step
        self.progress: Progress | None = None
        self.task = None
        self._epoch_start = 0.0

    def on_train_begin(self, logs=None):
        if not self.epochs:  # not known when the display was made (train --auto)
            self.epochs = int(self.params.get("epochs") or 0)
        if self.progress is None:
            self.progress = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs_total]}"),
                MofNCompleteColumn(),
                BarColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task(
                "train", total=1, epoch=0, epochs_total=self.epochs, info="tracing the graph..."
            )

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.monotonic()
        steps = self.params.get("steps") or 1
        self.progress.update(self.task, completed=0, total=steps, epoch=epoch + 1)

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        info = (
            f"loss {logs.get('loss', float('nan')):.4f}  dice {logs.get('dice', float('nan')):.3f}"
        )
        took = time.monotonic() - self._epoch_start
        if batch > 0 and took > 0:  # the first step traces the graph: no rate yet
            rate = (batch + 1) / took
            info += (
                f"  {rate * self.images_per_step:.1f} img/s"
                if self.images_per_step
                else f"  {rate:.2f} steps/s"
            )
        self.progress.update(self.task, completed=batch + 1, info=info)

    def on_train_end(self, logs=None):
        # fit() is called once per phase; the bar lives until the process is done with it.
        pass

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
