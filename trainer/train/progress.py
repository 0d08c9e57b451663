"""A live training display on stderr (rich): epoch, loss, Dice, learning rate, images/s, ETA, memory."""

from __future__ import annotations

import time

import keras
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from trainer.train.callbacks import peak_memory_bytes
from trainer.units import gib


class RichProgress(keras.callbacks.Callback):
    """Keras callback drawing one progress bar per run and a line per finished epoch.

    Args:
        epochs: the plan's maximum epochs (the ETA assumes all of them run).
        console: where to draw. Defaults to a stderr console, so `--json` stdout stays clean.
    """

    def __init__(self, epochs: int, console: Console | None = None):
        super().__init__()
        self.epochs = epochs
        self.console = console or Console(stderr=True)
        self.progress: Progress | None = None
        self.task = None
        self._epoch_start = 0.0
        self._epoch_times: list[float] = []

    def on_train_begin(self, logs=None):
        if not self.epochs:  # not known when the display was made (train --auto)
            self.epochs = int(self.params.get("epochs") or 0)
        if self.progress is None:
            self.progress = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs_total]}"),
                BarColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
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
        self.progress.update(self.task, completed=batch + 1, info=info)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        took = time.monotonic() - self._epoch_start
        self._epoch_times.append(took)
        left = self.epochs - (epoch + 1)
        recent = self._epoch_times[-3:]
        eta = left * sum(recent) / len(recent)
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        parts = [
            f"epoch {epoch + 1}/{self.epochs}",
            f"loss {logs.get('loss', float('nan')):.4f}",
            f"dice {logs.get('dice', float('nan')):.3f}",
        ]
        if "val_loss" in logs:
            parts += [
                f"val_loss {logs['val_loss']:.4f}",
                f"val_dice {logs.get('val_dice', float('nan')):.3f}",
            ]
        parts += [
            f"lr {lr:.2e}",
            f"{logs.get('images_per_s', 0.0):.1f} img/s",
            f"peak {gib(peak_memory_bytes())}",
            f"{took:.0f}s",
            f"ETA {eta / 60:.1f} min (if no early stop)",
        ]
        self.console.print("  ".join(parts), highlight=False)

    def on_train_end(self, logs=None):
        # fit() is called once per phase; the bar lives until the process is done with it.
        pass

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
