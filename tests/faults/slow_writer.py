"""Run `fitplan` with a checkpoint writer that a kill -9 catches half-way (fault suite only).

    python -m tests.faults.slow_writer MARKER NAME fitplan-arguments...

When a checkpoint (`trainer.train.run_dir.write_weights`: HDF5 writes straight into a
temporary file) goes to a file whose name contains NAME, the file is left with only its
first half (what a kill during the write leaves on disk), MARKER is written with the
file's path, and the writer stalls until the test kills the process. Every other write
is untouched.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def main() -> None:
    marker, name, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    from trainer.train import run_dir

    original = run_dir.write_weights

    def write_weights(model, path: Path, reserve: int) -> None:
        original(model, path, reserve)
        if name in path.name and path.name.endswith(".weights.h5"):
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])
            Path(marker).write_bytes(str(path).encode())
            time.sleep(3600)

    run_dir.write_weights = write_weights
    from planner.app.cli import app

    sys.argv = ["fitplan", *args]
    app()


if __name__ == "__main__":
    main()
