"""What a checkpoint write costs: time and the resident-set transient, as fitplan writes it
(`trainer.train.run_dir.write_weights`: the file's space reserved, HDF5 straight into it)
against the way it wrote until stop 28 (HDF5 into an `io.BytesIO`, then one plain write).

One process: the U-Net is built, compiled with Adam and trained one step (so the
optimizer's state is in the file, as in a run's `last` checkpoint); then the two arms
alternate `--repeats` times, each after `malloc_trim` (`release_free_heap`) and a reset
of the peak mark, each write followed by an fsync. Prints per arm the seconds and the
transient (peak during the write minus the resident set before it), and their medians.

    python benchmarks/checkpoint_write.py --backbone efficientnet_b0 --side 384

Measured (stop 28, 2026-12-04, 2-vCPU AMD EPYC with AVX-512, efficientnet_b0 384x384,
116 MiB file, 4 repeats, alone on the machine; two runs, the first by a draft of this
script): transient into memory 193-212 MiB, straight to the file 48-50 MiB; time about
the same: medians 0.79 and 0.68 s into memory, 0.70 and 0.74 s to the file.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

MIB = 2**20


def measure(backbone: str, side: int, repeats: int, folder: Path) -> dict:
    """Both arms on one model; returns seconds and transients (bytes) per arm."""
    from trainer.train.memory import configure_malloc

    configure_malloc()
    import keras
    import numpy as np
    import psutil

    from trainer.models.unet import build_unet
    from trainer.train.memory import peak_rss_bytes, release_free_heap, reset_peak_rss
    from trainer.train.run_dir import _expected_bytes, write_weights

    model = build_unet(backbone, (side, side, 3), 2, output="logits")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    x = rng.random((2, side, side, 3), dtype=np.float32)
    y = (rng.random((2, side, side, 1)) > 0.5).astype(np.float32)
    model.fit(x, y, epochs=1, verbose=0)

    class Memory(io.BytesIO):
        def __str__(self) -> str:
            return "memory.weights.h5"

    def into_memory(path: Path) -> None:  # fitplan until stop 28
        buf = Memory()
        model.save_weights(buf)
        path.write_bytes(buf.getvalue())

    def to_file(path: Path) -> None:  # fitplan now
        path.touch()
        write_weights(model, path, reserve)

    process = psutil.Process()
    reserve = 0
    arms = {"into_memory": into_memory, "to_file": to_file}
    out: dict = {name: {"seconds": [], "transient_bytes": []} for name in arms}
    for i in range(repeats):
        for name, write in arms.items():
            path = folder / f"{name}-{i}.weights.h5"
            release_free_heap()
            before = process.memory_info().rss
            reset_peak_rss()
            t = time.perf_counter()
            write(path)
            fd = os.open(path, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
            out[name]["seconds"].append(round(time.perf_counter() - t, 3))
            out[name]["transient_bytes"].append(peak_rss_bytes() - before)
            out["file_bytes"] = path.stat().st_size
            reserve = _expected_bytes(model, [path])  # what `RunDir.save_weights` reserves
            path.unlink()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="efficientnet_b0")
    ap.add_argument("--side", type=int, default=384)
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON only")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fitplan-ckpt-", dir=".") as d:
        out = measure(args.backbone, args.side, args.repeats, Path(d))
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"{args.backbone} {args.side}x{args.side}: file {out['file_bytes'] / MIB:.1f} MiB")
    for name in ("into_memory", "to_file"):
        r = out[name]
        med_s = statistics.median(r["seconds"])
        med_t = statistics.median(r["transient_bytes"]) / MIB
        print(
            f"  {name:12s} seconds {r['seconds']} (median {med_s:.2f}); transient MiB "
            f"{[round(b / MIB) for b in r['transient_bytes']]} (median {med_t:.0f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
