"""Quality at equal wall time: `fitplan train --auto` against the classic tutorial U-Net.

    python benchmarks/quality.py --out DIR [--budget-time 10m] [--mode parallel|sequential]

Two arms, each in its own process, on the same data and the same wall-clock budget:

- **fitplan**: `planner.app.auto.auto_train` (what `fitplan train --auto DATA --masks M
  --budget-time T` runs): probe, scan, measure candidates, plan and train, planning
  counted inside the budget. It sees only the training folder; its validation split
  comes out of it (the test set is never used to pick weights). Scored with
  `trainer.use.evaluate.evaluate` on the test set: tiled prediction at native resolution.
- **baseline**: the classic Keras U-Net tutorial (zhixuhao/unet, the repository this
  dataset was redistributed in), written here and not in the product: one grey
  channel, every image resized to 256x256, filters 64-128-256-512-1024 with dropout 0.5
  at the two deepest levels, UpSampling2D + 2x2 conv in the decoder, sigmoid output,
  Adam 1e-4, plain binary cross-entropy, batch 2, all 27 training images. The
  tutorial's augmentation (small rotations, shifts, shear, zoom and horizontal flips
  through ImageDataGenerator) is reduced to horizontal and vertical flips. It trains
  until the same budget has passed (checked after every batch), counted, like
  fitplan's, from just after the imports. Scored as the tutorial would run it:
  predict at 256x256, resize the probabilities back to the native 768x1024 with nearest
  neighbour, threshold 0.5; then the same confusion-matrix Dice as `evaluate`, against
  the same decoded masks.

The fitplan arm runs the command itself (`fitplan train --auto ... --json` in a child
process, with an empty measurement cache under DIR unless `--warm-cache`), so its wall time
is counted from the command's start to its exit, as a user's clock counts it (imports,
planning, training, final validation and checkpoint; issue 15, 6); scoring comes after.

The issue's comparison gives the tutorial twice fitplan's time: `--budget-time 10m
--baseline-time 20m`. `--mode parallel` (default) starts both arms at once, so on a shared
machine they share the CPU equally; `sequential` runs fitplan first, then the baseline.
`--arms baseline` or `--arms fitplan` runs one arm alone (each arm's JSON records its own
start time and the machine's load), and the summary `DIR/quality.json` is written from
whichever arm files DIR holds. Writes `DIR/fitplan.json`, `DIR/baseline.json`,
`DIR/quality.json` and the fitplan run folder `DIR/fitplan-run`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `planner`, `trainer` importable
    sys.path.insert(0, str(ROOT))

from trainer.atomic import write_text  # noqa: E402

EPFL = ROOT.parent / "shared" / "datasets" / "epfl-em"
SIDE = 256  # the tutorial's input size
BATCH = 2
LEARNING_RATE = 1e-4
SEED = 0


# -- the baseline: the tutorial's model, data and scoring ---------------------------------


def tutorial_unet(side: int = SIDE, base: int = 64):
    """The tutorial's U-Net (zhixuhao/unet `model.py`), uncompiled: 1 grey channel in, sigmoid out."""
    import keras
    from keras import layers

    def conv(x, filters, k=3):
        return layers.Conv2D(
            filters, k, activation="relu", padding="same", kernel_initializer="he_normal"
        )(x)

    inputs = keras.Input((side, side, 1))
    skips, x = [], inputs
    for level, f in enumerate([base, base * 2, base * 4, base * 8]):
        x = conv(conv(x, f), f)
        if level == 3:
            x = layers.Dropout(0.5)(x)
        skips.append(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Dropout(0.5)(conv(conv(x, base * 16), base * 16))
    for f, skip in zip([base * 8, base * 4, base * 2, base], reversed(skips), strict=True):
        x = conv(layers.UpSampling2D(2)(x), f, k=2)
        x = layers.Concatenate()([skip, x])
        x = conv(conv(x, f), f)
    x = conv(x, 2)
    outputs = layers.Conv2D(1, 1, activation="sigmoid")(x)
    return keras.Model(inputs, outputs, name="tutorial_unet")


def _grey_256(path: Path):
    """Image decoded as training decodes it, first channel (the slices are grey), bilinear to 256."""
    import tensorflow as tf

    from trainer.use.inference import read_image

    image = read_image(path)[..., :1]
    return tf.image.resize(image, (SIDE, SIDE), method="bilinear").numpy()


def _load_train(root: Path, masks: str):
    import numpy as np
    import tensorflow as tf

    from trainer.data.pairs import find_pairs
    from trainer.use.inference import read_mask

    pairs = find_pairs(root, "images", masks).pairs
    xs = np.stack([_grey_256(p.image) for p in pairs])
    ys = []
    for p in pairs:
        m = read_mask(p.mask, (0, 255))[..., None].astype("float32")  # fringe -> nearest class
        # The tutorial loads masks at target_size with nearest interpolation, then thresholds.
        ys.append(tf.image.resize(m, (SIDE, SIDE), method="nearest").numpy())
    return xs, (np.stack(ys) > 0.5).astype("float32"), len(pairs)


def _flips(x, y):
    import tensorflow as tf

    both = tf.concat([x, y], axis=-1)
    both = tf.image.random_flip_left_right(both)
    both = tf.image.random_flip_up_down(both)
    return both[..., :1], both[..., 1:]


def run_baseline(args: argparse.Namespace, started: float) -> dict[str, Any]:
    """Train the tutorial U-Net until `started + budget`, then score it on the test set."""
    import keras
    import numpy as np
    import tensorflow as tf

    from trainer.data.pairs import find_pairs
    from trainer.train.memory import peak_rss_bytes
    from trainer.use.evaluate import class_scores, confusion
    from trainer.use.inference import read_mask

    keras.utils.set_random_seed(SEED)
    deadline = started + args.baseline_s
    xs, ys, n = _load_train(Path(args.data), args.masks)
    ds = (
        tf.data.Dataset.from_tensor_slices((xs, ys))
        .shuffle(n, seed=SEED, reshuffle_each_iteration=True)
        .repeat()
        .map(_flips, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(BATCH)
        .prefetch(tf.data.AUTOTUNE)
    )
    model = tutorial_unet()
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss="binary_crossentropy")

    class Deadline(keras.callbacks.Callback):
        steps = 0

        def on_train_batch_end(self, batch, logs=None):
            Deadline.steps += 1
            if time.monotonic() >= deadline:
                self.model.stop_training = True

    steps_per_epoch = -(-n // BATCH)
    hist = model.fit(
        ds,
        epochs=10_000,
        steps_per_epoch=steps_per_epoch,
        callbacks=[Deadline()],
        verbose=0,
        shuffle=False,  # the tf.data pipeline shuffles
    )
    train_s = time.monotonic() - started

    t0 = time.monotonic()
    cm = np.zeros((2, 2), np.int64)
    per_image = []
    test_pairs = find_pairs(Path(args.test), "images", args.masks).pairs
    for p in test_pairs:
        true = read_mask(p.mask, (0, 255))
        prob = model.predict_on_batch(_grey_256(p.image)[None])[0]
        prob = tf.image.resize(prob, true.shape, method="nearest").numpy()[..., 0]
        img_cm = confusion(true, (prob >= 0.5).astype(np.int32), 2)
        cm += img_cm
        per_image.append(class_scores(img_cm)[1]["dice"])
    scores = class_scores(cm)[1]
    losses = hist.history.get("loss", [])
    return {
        "arm": "baseline",
        "what": "classic tutorial U-Net (64-1024 filters, 31M parameters), 256x256 grey, batch 2, "
        "Adam 1e-4, BCE, flips; trained on all training images",
        "parameters": int(model.count_params()),
        "dice": scores["dice"],
        "iou": scores["iou"],
        "precision": scores["precision"],
        "recall": scores["recall"],
        "per_image_dice_mean": float(np.mean(per_image)),
        "scoring": "predict at 256x256, nearest-neighbour resize to native, threshold 0.5, "
        "confusion matrix over all test pixels (as trainer.use.evaluate)",
        "train_images": n,
        "test_images": len(test_pairs),
        "optimizer_steps": Deadline.steps,
        "epochs": round(Deadline.steps / steps_per_epoch, 2),
        "final_loss": float(losses[-1]) if losses else None,
        "train_wall_s": round(train_s, 1),
        "score_wall_s": round(time.monotonic() - t0, 1),
        "peak_memory_bytes": peak_rss_bytes(),
    }


# -- the fitplan arm ---------------------------------------------------------------------


def run_fitplan(args: argparse.Namespace, started: float) -> dict[str, Any]:
    """`fitplan train --auto` as a child command under the budget, then `evaluate` on the test set."""
    from trainer.use.evaluate import evaluate

    out = Path(args.out)
    run_dir = out / "fitplan-run"
    env = dict(os.environ)
    if not args.warm_cache:  # a new user's machine: nothing measured before
        env["FITPLAN_CACHE_DIR"] = str(out / "cache")
    cmd = [sys.executable, "-m", "planner.app.cli", "train", "--auto", str(args.data)]
    cmd += ["--masks", args.masks, "--budget-time", f"{args.budget_s:g}"]
    cmd += ["--out-dir", str(run_dir), "--json"]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    command_s = time.monotonic() - t0
    (out / "fitplan-command.log").write_text(proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(
            f"fitplan train --auto failed (exit {proc.returncode}): {proc.stderr[-2000:]}"
        )
    m = json.loads(proc.stdout)
    p = json.loads((run_dir / "plan.json").read_text())
    scores = evaluate(run_dir, args.test, masks=args.masks)
    return {
        "arm": "fitplan",
        "what": "fitplan train --auto (planning inside the budget), validation split from "
        "the training folder" + ("" if args.warm_cache else ", empty measurement cache"),
        "command": " ".join(cmd),
        "plan": {
            "backbone": p["backbone"],
            "input_size": p["input_size"],
            "micro_batch": p["micro_batch"],
            "accumulation_steps": p["accumulation_steps"],
            "normalization": p.get("normalization"),
            "epochs_planned": p["epochs"],
        },
        "planning_time_s": m.get("planning_time_s"),
        "planning_children": m.get("planning_children"),
        "dice": scores["dice_mean"],
        "iou": scores["iou_mean"],
        "precision": scores["precision_mean"],
        "recall": scores["recall_mean"],
        "per_image_dice_mean": scores["per_image_dice_mean"],
        "scoring": "trainer.use.evaluate.evaluate: tiled prediction at native resolution, "
        "confusion matrix over all test pixels",
        "train_images": m.get("train_pairs"),
        "val_images": m.get("val_pairs"),
        "test_images": scores["images"],
        "epochs": m.get("epochs"),
        "optimizer_updates": m.get("optimizer_updates"),
        "stopped_by": m.get("stopped_by"),
        "best_epoch": m.get("best_epoch"),
        "best_val_dice": m.get("best_val_dice"),
        # The user's clock: the command's start to its exit, against the budget.
        "command_wall_s": round(command_s, 1),
        "command_over_budget": round(command_s / args.budget_s - 1, 4),
        "time_account": m.get("time_account"),
        "train_wall_s": round(command_s, 1),
        "score_wall_s": scores["seconds"],
        "peak_memory_bytes": m.get("peak_memory_bytes"),
    }


# -- the driver ---------------------------------------------------------------------------


def _arm(args: argparse.Namespace) -> None:
    started = time.monotonic()  # the baseline: after the imports above
    load_start, wall_start = list(os.getloadavg()), time.strftime("%Y-%m-%dT%H:%M:%S%z")
    fitplan = args.arm == "fitplan"
    doc = (run_fitplan if fitplan else run_baseline)(args, started)
    doc["budget_s"] = args.budget_s if fitplan else args.baseline_s
    doc["started"] = wall_start
    doc["load_average_start"] = load_start
    doc["load_average_end"] = list(os.getloadavg())
    write_text(Path(args.out) / f"{args.arm}.json", json.dumps(doc, indent=2) + "\n")


def _spawn(args: argparse.Namespace, arm: str) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--arm", arm, "--out", str(args.out)]
    cmd += ["--data", str(args.data), "--test", str(args.test), "--masks", args.masks]
    cmd += ["--budget-time", str(args.budget_s), "--baseline-time", str(args.baseline_s)]
    if args.warm_cache:
        cmd.append("--warm-cache")
    log = open(Path(args.out) / f"{arm}.log", "w")  # closed when the process exits
    print(f"started the {arm} arm: log {log.name}", flush=True)
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=EPFL / "train")
    parser.add_argument("--test", type=Path, default=EPFL / "test")
    parser.add_argument("--masks", default="mitochondria")
    parser.add_argument("--budget-time", default="10m", help="e.g. 10m, 600 (seconds)")
    parser.add_argument(
        "--baseline-time", default=None, help="the tutorial's budget (default: --budget-time)"
    )
    parser.add_argument("--mode", choices=["parallel", "sequential"], default="parallel")
    parser.add_argument(
        "--arms", default="fitplan,baseline", help="which arms to run now (the summary reads both)"
    )
    parser.add_argument(
        "--warm-cache", action="store_true", help="fitplan keeps the user's measurement cache"
    )
    parser.add_argument("--arm", choices=["fitplan", "baseline"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from planner.app.units import parse_duration

    args.budget_s = parse_duration(args.budget_time)
    args.baseline_s = parse_duration(args.baseline_time or args.budget_time)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.arm:
        _arm(args)
        return 0

    run_now = [a for a in ("fitplan", "baseline") if a in args.arms.split(",")]
    print(
        f"quality benchmark: fitplan train --auto ({args.budget_s:.0f} s) vs the tutorial U-Net "
        f"({args.baseline_s:.0f} s), {args.mode}, running {run_now}; train {args.data}, "
        f"test {args.test}, masks {args.masks}",
        flush=True,
    )
    load_start = list(os.getloadavg())
    t0 = time.monotonic()
    if args.mode == "parallel":
        procs = [_spawn(args, arm) for arm in run_now]
        codes = [p.wait() for p in procs]
    else:
        codes = [_spawn(args, arm).wait() for arm in run_now]
    for arm, code in zip(run_now, codes, strict=True):
        if code != 0 or not (args.out / f"{arm}.json").exists():
            print(f"the {arm} arm failed (exit {code}): see {args.out / (arm + '.log')}")
            return 1
    arms = {
        arm: json.loads((args.out / f"{arm}.json").read_text())
        for arm in ("fitplan", "baseline")
        if (args.out / f"{arm}.json").exists()
    }
    doc = {
        "mode": args.mode,
        "budget_s": {arm: a["budget_s"] for arm, a in arms.items()},
        "ran_now": run_now,
        "cores": os.cpu_count(),
        "load_average_start": load_start,
        "load_average_end": list(os.getloadavg()),
        "wall_s": round(time.monotonic() - t0, 1),
        "dice": {arm: arms[arm]["dice"] for arm in arms},
        "winner": winner(arms),
        "arms": arms,
    }
    write_text(args.out / "quality.json", json.dumps(doc, indent=2) + "\n")
    for arm, a in arms.items():
        print(
            f"{arm:9s} Dice {a['dice']:.4f} (per-image mean {a['per_image_dice_mean']:.4f}), "
            f"{a['epochs']} epochs, trained {a['train_wall_s']:.0f} s, scored in {a['score_wall_s']:.0f} s"
        )
    won = doc["winner"] or "none (one arm in this folder; run the other with --arms)"
    print(f"winner: {won}; wrote {args.out / 'quality.json'}")
    return 0


def winner(arms: dict[str, dict]) -> str | None:
    """The arm with the higher test Dice; `None` with one arm (`--arms`: nothing to beat)."""
    return max(arms, key=lambda a: arms[a]["dice"]) if len(arms) > 1 else None


if __name__ == "__main__":
    sys.exit(main())
