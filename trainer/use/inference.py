"""Use a trained run: load it safely and predict whole images with overlapping tiles.

Loading never unpickles anything from the run folder: the model is rebuilt from
`plan.json` (the same builder training used) and `best.weights.h5` is loaded into it.
The weights file holds tensors only, so a run folder from elsewhere cannot run code.

Prediction works at native resolution (times `plan.data.image_scale`), because that
is what the model trained on: random native-resolution crops of `input_size`.
Resizing a whole 768x1024 image down to a 256x256 input would show the model objects
at a scale it never saw. Whole images are predicted with overlapping, blended tiles
(`trainer.use.tiling`).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trainer.data.pairs import list_images
from trainer.data.splits import work_size
from trainer.errors import DataError, RunDirError
from trainer.plan import DataSpec, Plan, load_plan
from trainer.use.tiling import DEFAULT_OVERLAP, resize, sliding_window, to_classes


@dataclass
class LoadedRun:
    """A trained run, ready to predict.

    Attributes:
        path: the run folder.
        plan: the plan it trained, as in plan.json.
        model: the rebuilt U-Net with the best weights, uncompiled.
        num_classes: classes including background (2: one sigmoid channel).
        mask_values: raw mask value of each class, or `None` if the run did not
            record them (then evaluation infers them from the masks).
        metrics: the run's metrics.json (empty if it has none).
        batch_size: tiles per model call.
    """

    path: Path
    plan: Plan
    model: Any
    num_classes: int
    mask_values: tuple[int, ...] | None
    metrics: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 8

    @property
    def input_size(self) -> tuple[int, int]:
        return (int(self.plan.input_size[0]), int(self.plan.input_size[1]))

    def predict_batch(self, batch: np.ndarray) -> np.ndarray:
        """The model on a batch of tiles; the last partial batch is padded to keep one trace."""
        n = len(batch)
        if n < self.batch_size:
            filler = np.zeros((self.batch_size - n, *batch.shape[1:]), batch.dtype)
            batch = np.concatenate([batch, filler])
        return np.asarray(self.model.predict_on_batch(batch))[:n]

    def predict_proba(self, image: np.ndarray, *, overlap: float = DEFAULT_OVERLAP) -> np.ndarray:
        """Probabilities `[H, W, 1 or K]` for one `[H, W, 3]` image in [0, 1], at its own size."""
        h, w = image.shape[:2]
        work = resize(image, *work_size(h, w, self.plan.data.image_scale, self.input_size))
        probs = sliding_window(
            self.predict_batch, work, self.input_size, batch_size=self.batch_size, overlap=overlap
        )
        return resize(probs, h, w)

    def predict_classes(self, image: np.ndarray, *, overlap: float = DEFAULT_OVERLAP) -> np.ndarray:
        """Class indices `[H, W]` int32 for one image, at its own size."""
        return to_classes(self.predict_proba(image, overlap=overlap))


def read_image(path: str | Path, data: DataSpec | None = None) -> np.ndarray:
    """`trainer.data.decode.load_image`, with a corrupt file as a `DataError` naming it.

    `data`: the run's plan `data`, whose `normalization` and `intensity_range` bring
    images deeper than 8 bits to [0, 1] as in training; `None`: the default rule.
    """
    import tensorflow as tf

    from trainer.data.decode import load_image

    norm = (data.normalization, data.intensity_range) if data is not None else ("image", None)
    try:
        return load_image(path, *norm)
    except tf.errors.OpError as exc:
        raise DataError(f"{path}: cannot decode image ({exc.message.splitlines()[0]})") from exc


def read_mask(
    path: str | Path,
    mask_values: tuple[int, ...],
    ignore: int | None = None,
    palette: tuple[str, ...] | None = None,
) -> np.ndarray:
    """`trainer.data.decode.load_mask`, with a corrupt file as a `DataError` naming it.

    `ignore`: raw value kept as itself (pixels to leave out of the scores), or `None`;
    `palette`: the run's `data.palette` for colour-coded masks.
    """
    import tensorflow as tf

    from trainer.data.decode import load_mask

    try:
        return load_mask(path, mask_values, ignore, palette)
    except tf.errors.OpError as exc:
        raise DataError(f"{path}: cannot decode mask ({exc.message.splitlines()[0]})") from exc


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """The run's metrics.json, or `{}` when it has none (a run killed before the end)."""
    path = Path(run_dir) / "metrics.json"
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(data, dict):
        raise RunDirError(f"{path}: not a metrics object")
    return data


def check_run_dir(run_dir: str | Path) -> Plan:
    """The run's plan, after checking that the files prediction needs are there (fast).

    Raises:
        RunDirError: naming the missing folder, plan.json or best.weights.h5.
        PlanError: plan.json is invalid.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise RunDirError(f"{run}: run folder not found")
    plan_path, weights = run / "plan.json", run / "best.weights.h5"
    if not plan_path.exists():
        raise RunDirError(f"{plan_path}: missing, so {run} is not a fitplan run folder")
    plan = load_plan(plan_path)
    if not weights.exists():
        raise RunDirError(
            f"{weights}: missing",
            hint="the run stopped before its first epoch finished; train it again or resume it",
        )
    return plan


def load_run(
    run_dir: str | Path, *, precision: str | None = None, batch_size: int | None = None
) -> LoadedRun:
    """Rebuild a run's model from its plan.json and load best.weights.h5 into it.

    Args:
        run_dir: the run folder `fitplan train` wrote.
        precision: dtype policy to build with. `None` (default): the plan's own.
            Export passes `"float32"`, the portable choice.
        batch_size: tiles per model call. `None` (default): twice the plan's
            micro-batch; inference keeps no activations for a backward pass, so it
            needs far less memory per image than the training step did.

    Raises:
        RunDirError: the folder, plan.json or best.weights.h5 is missing, or the
            weights do not fit the model the plan describes (names the file).
        PlanError: plan.json is invalid.
    """
    run = Path(run_dir)
    plan = check_run_dir(run)
    weights = run / "best.weights.h5"
    metrics = read_metrics(run)
    num_classes = metrics.get("num_classes") or plan.data.num_classes
    if not isinstance(num_classes, int) or num_classes < 2:
        raise RunDirError(
            f"{run / 'metrics.json'}: missing or without `num_classes`, and plan.json's "
            "data.classes / data.mask_values do not give the class count either"
        )
    mask_values = metrics.get("mask_values") or plan.data.mask_values
    # Pretrained encoder weights are overwritten by the trained ones: never fetch them.
    build_plan = plan.replace(weights="none", precision=precision or plan.precision)
    model = _build(build_plan, num_classes, weights)
    bs = batch_size or max(1, 2 * plan.micro_batch)
    mv = tuple(int(v) for v in mask_values) if mask_values else None
    return LoadedRun(run, plan, model, num_classes, mv, metrics, bs)


def _build(plan: Plan, num_classes: int, weights: Path):
    from trainer.train.setup import build_model_for_plan

    model = build_model_for_plan(plan, num_classes, compile=False)
    problem = None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.load_weights(str(weights))
        # Keras only warns when parts of the file match no layer and keeps those layers
        # freshly initialised: for a trained model that is an error. The optimizer's
        # slots in the file are expected and not needed for inference.
        skipped = [str(w.message) for w in caught if "Skipping" in str(w.message)]
        skipped = [m for m in skipped if "optimizer" not in m]
        if skipped:
            problem = skipped[0].splitlines()[0]
    except (ValueError, OSError, KeyError) as exc:
        problem = str(exc).splitlines()[0]
    if problem is not None:
        raise RunDirError(
            f"{weights}: does not fit the model plan.json describes ({problem})",
            hint="was plan.json edited after training?",
        )
    return model


def sample_crops(
    run: LoadedRun, data_root: str | Path | None, n: int, seed: int
) -> tuple[np.ndarray, str]:
    """`n` random crops of `input_size` from the run's training images, and where from.

    Images are sized as in training (`work_size`). When the images are gone
    (the run was moved), seeded synthetic images are used: smooth blobs plus grain.
    """
    th, tw = run.input_size
    rng = np.random.default_rng(seed)
    folder = Path(data_root or run.plan.data.path) / run.plan.data.images
    files = list_images(folder) if folder.is_dir() else []
    k = min(n, len(files), 8)  # a few images give enough variety for a check
    picks = [files[i] for i in rng.choice(len(files), size=k, replace=False)] if k else []
    images = []
    for f in picks:
        try:
            img = read_image(f, run.plan.data)
        except DataError:
            continue  # a broken training image must not block an export
        h, w = img.shape[:2]
        images.append(resize(img, *work_size(h, w, run.plan.data.image_scale, (th, tw))))
    if not images:
        return _synthetic(rng, n, th, tw), f"synthetic (no readable images in {folder})"
    crops = []
    for i in range(n):
        img = images[i % len(images)]
        y = int(rng.integers(0, img.shape[0] - th + 1))
        x = int(rng.integers(0, img.shape[1] - tw + 1))
        crops.append(img[y : y + th, x : x + tw])
    return np.stack(crops).astype(np.float32), "training images"


def _synthetic(rng: np.random.Generator, n: int, th: int, tw: int) -> np.ndarray:
    coarse = rng.random((n, th // 8 + 1, tw // 8 + 1, 3)).astype(np.float32)
    smooth = np.stack([resize(c, th, tw) for c in coarse])
    grain = rng.normal(0, 0.05, (n, th, tw, 3)).astype(np.float32)
    return np.clip(smooth + grain, 0, 1)


__all__ = [
    "LoadedRun",
    "check_run_dir",
    "load_run",
    "read_image",
    "read_mask",
    "read_metrics",
    "sample_crops",
]
