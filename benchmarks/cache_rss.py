"""What an in-RAM cache (plan `data.cache = "memory"`) really costs, against the planner's figure.

Each arm is a fresh child process that runs the trainer's own loader
(`trainer.data.pipeline.decoded_pairs`: decode, normalise, class indices) over every pair of a
dataset, with `ds.cache()` after it (`memory`) or without (`stream`), for two passes. It
reports the process's resident set after TensorFlow's start-up and one element, the
resident set after the two passes and the peak (`VmHWM`), and the bytes of the tensors
the loader yielded. The parent prints, beside them, what the planner puts on the
prediction for the cache (`planner.build.cache_bytes` of the scan). Arms alternate
(`--repeats`), one at a time.

    python benchmarks/cache_rss.py --data ../shared/datasets/epfl-em/train --masks mitochondria

Measured (stop 26, 2-vCPU AMD EPYC, avx avx2 fma; epfl-em mitochondria, 27 pairs of
768x1024, 23 LA and 4 RGBA slices, 2 runs per arm): tensors 125.2 MiB = the planner's
figure; the cache's cost over streaming, medians, 110.7 MiB at peak and 129.6 MiB
resident. The figure before stop 26 (every decoded byte x 4) was 267 MiB.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MIB = 2**20


def child(arm: str, root: str, masks: str, images: str, ignore_index: int | None = None) -> dict:
    """One arm, in this process (called as the child)."""
    import psutil

    from trainer.data.pipeline import decoded_pairs
    from trainer.plan import DataSpec
    from trainer.train.memory import configure_malloc

    configure_malloc()  # as every training process (trainer.train.memory)

    def hwm() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM"):
                return int(line.split()[1]) * 1024
        return 0

    data = DataSpec(
        path=root, images=images, masks=masks, cache="memory", ignore_index=ignore_index
    )
    ds = decoded_pairs(data)
    pairs = int(ds.cardinality())
    if arm == "memory":
        ds = ds.cache()
    proc = psutil.Process()
    next(iter(ds.take(1)))
    rss0 = proc.memory_info().rss
    nbytes = 0
    for epoch in range(2):
        for image, mask in ds:
            if epoch == 0:
                nbytes += image.numpy().nbytes + mask.numpy().nbytes
    return {
        "arm": arm,
        "pairs": pairs,
        "tensor_bytes": nbytes,
        "rss_before": rss0,
        "rss_after": proc.memory_info().rss,
        "peak": hwm(),
    }


def run_arm(arm: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", arm, "--data", str(args.data)]
    cmd += ["--masks", args.masks, "--images", args.images]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--masks", default="masks")
    p.add_argument("--images", default="images")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, str(args.data), args.masks, args.images)))
        return 0

    from planner.build import cache_bytes
    from planner.scan import dataset

    fp = dataset.scan(args.data, images=args.images, masks=args.masks)
    rows = [run_arm(arm, args) for _ in range(args.repeats) for arm in ("stream", "memory")]
    by = {a: [r for r in rows if r["arm"] == a] for a in ("stream", "memory")}
    med = lambda a, k: statistics.median(r[k] for r in by[a])  # noqa: E731
    resident = lambda r: r["rss_after"] - r["rss_before"]  # noqa: E731
    print(
        f"data: {args.data} (masks {args.masks}), {rows[0]['pairs']} pairs, {args.repeats} runs per arm"
    )
    print("| arm | tensors MiB | resident growth MiB | peak MiB |")
    print("|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['arm']} | {r['tensor_bytes'] / MIB:.1f} | {resident(r) / MIB:.1f} "
            f"| {r['peak'] / MIB:.1f} |"
        )
    peak_cost = med("memory", "peak") - med("stream", "peak")
    res_cost = statistics.median(map(resident, by["memory"])) - statistics.median(
        map(resident, by["stream"])
    )
    print(
        f"cache cost over streaming (medians): {peak_cost / MIB:.1f} MiB at peak, "
        f"{res_cost / MIB:.1f} MiB resident; the planner's figure "
        f"(planner.build.cache_bytes): {cache_bytes(fp) / MIB:.1f} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
