"""Run `fitplan` with a checkpoint writer that a kill -9 catches half-way (fault suite only).

    python -m tests.faults.slow_writer MARKER NAME fitplan-arguments...

When Keras' `save_weights` writes a file whose name contains NAME, the complete
file is cut to half its size (what a kill during the write leaves on disk), MARKER
is written with the file's path, and the writer stalls until the test kills the
process. Every other write is untouched.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def main() -> None:
    marker, name, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    import keras

    original = keras.Model.save_weights

    def save_weights(self, filepath, *a, **kw):
        original(self, filepath, *a, **kw)
        path = Path(filepath)
        if name in path.name:
            with open(path, "r+b") as fh:
                fh.truncate(path.stat().st_size // 2)
            Path(marker).write_text(str(path))
            time.sleep(3600)

    keras.Model.save_weights = save_weights
    from planner.app.cli import app

    sys.argv = ["fitplan", *args]
    app()


if __name__ == "__main__":
    main()
