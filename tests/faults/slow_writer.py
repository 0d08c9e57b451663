"""Run `fitplan` with a checkpoint writer that a kill -9 catches half-way (fault suite only).

    python -m tests.faults.slow_writer MARKER NAME fitplan-arguments...

When a checkpoint's bytes (`trainer.train.run_dir`: HDF5 writes into memory, then one
`Path.write_bytes` puts them on disk) go to a file whose name contains NAME, only the
first half is written (what a kill during the write leaves on disk), MARKER is written
with the file's path, and the writer stalls until the test kills the process. Every
other write is untouched.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def main() -> None:
    marker, name, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    original = Path.write_bytes

    def write_bytes(self, data):
        if name in self.name and self.name.endswith(".weights.h5"):
            original(self, data[: len(data) // 2])
            original(Path(marker), str(self).encode())
            time.sleep(3600)
        return original(self, data)

    Path.write_bytes = write_bytes
    from planner.app.cli import app

    sys.argv = ["fitplan", *args]
    app()


if __name__ == "__main__":
    main()
