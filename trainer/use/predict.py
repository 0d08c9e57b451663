"""Write a mask PNG for every input image: `predict(run_dir, inputs, out_dir)`.

Each mask has its input's own size: 0/255 for a binary model, the class index
(0 .. K-1) for a multi-class one. One unreadable input does not stop the others: it
is named in the error raised after all inputs were processed, so a batch job gets
every mask it can and still exits non-zero.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from trainer.atomic import write_bytes
from trainer.data.pairs import IMAGE_EXTENSIONS, list_images
from trainer.errors import DataError, FitplanError
from trainer.use.inference import LoadedRun, load_run, read_image

Progress = Callable[[int, int, Path], None]

# Overlay colours of classes 1, 2, ... (class 0, the background, is left as it is).
PALETTE = np.array(
    [[230, 25, 75], [60, 180, 75], [0, 130, 200], [255, 225, 25], [145, 30, 180], [70, 240, 240]],
    np.float32,
)
OVERLAY_ALPHA = 0.45


class PredictionFailures(DataError):
    """Some inputs could not be predicted; the others were written.

    Attributes:
        written: the mask files that were written.
        failed: `(input, reason)` for each input that was not.
    """

    def __init__(self, written: list[Path], failed: list[tuple[Path, str]]):
        lines = "; ".join(f"{p}: {why}" for p, why in failed)
        super().__init__(
            f"{len(failed)} of {len(written) + len(failed)} inputs failed ({lines})",
            hint=f"the other {len(written)} masks were written",
        )
        self.written, self.failed = written, failed


def collect_inputs(inputs: Sequence[str | Path]) -> tuple[list[tuple[Path, Path]], list]:
    """Expand files and folders into `(image, output name without suffix)` pairs.

    A folder contributes every image under it, its sub-folders kept in the output
    names; a file contributes its stem. Returns the pairs and `(path, reason)` for
    inputs that do not exist or hold no images.
    """
    items: list[tuple[Path, Path]] = []
    failed: list[tuple[Path, str]] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            files = list_images(p)
            if not files:
                failed.append((p, "folder holds no images (" + ", ".join(IMAGE_EXTENSIONS) + ")"))
            items += [(f, f.relative_to(p).with_suffix("")) for f in files]
        elif p.is_file():
            items.append((p, Path(p.stem)))
        else:
            failed.append((p, "not found"))
    return items, failed


def _check_names(items: list[tuple[Path, Path]], out_dir: Path) -> None:
    seen: dict[Path, Path] = {}
    sources = {src.resolve() for src, _ in items}
    for src, name in items:
        target = out_dir / f"{name}.png"
        if target in seen:
            raise FitplanError(
                f"{src} and {seen[target]} would both be written to {target}",
                hint="predict them into different --out folders",
            )
        if target.resolve() in sources:
            raise FitplanError(
                f"{target}: writing the mask would overwrite an input image",
                hint="choose another --out folder",
            )
        seen[target] = src


def encode_mask(classes: np.ndarray, num_classes: int) -> bytes:
    """PNG bytes of a class map: 0/255 (binary) or class indices (8 or 16-bit)."""
    if num_classes == 2:
        arr = (classes > 0).astype(np.uint8) * 255
    elif num_classes <= 256:
        arr = classes.astype(np.uint8)
    else:
        arr = classes.astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def overlay_image(image: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """The image with each foreground class tinted in its palette colour, uint8 RGB."""
    rgb = np.clip(image[..., :3] * 255.0, 0, 255).astype(np.float32)
    fg = classes > 0
    colours = PALETTE[(classes - 1) % len(PALETTE)]
    rgb[fg] = (1 - OVERLAY_ALPHA) * rgb[fg] + OVERLAY_ALPHA * colours[fg]
    return rgb.round().astype(np.uint8)


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def predict(
    run_dir: str | Path,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    overlay: bool = False,
    *,
    run: LoadedRun | None = None,
    progress: Progress | None = None,
) -> list[Path]:
    """Predict a mask for every input image and write it to `out_dir` as PNG.

    Args:
        run_dir: the run folder.
        inputs: image files and/or folders (searched recursively).
        out_dir: where `NAME.png` goes for input `NAME.ext` (sub-folders of a
            folder input are kept). Created if missing.
        overlay: also write `NAME_overlay.png`, the image with the mask
            tinted over it. Defaults to `False`.
        run: an already loaded run. `None` (default): load `run_dir`.
        progress: called as `progress(done, total, input_path)` after each input.

    Returns:
        The mask files written, in input order.

    Raises:
        PredictionFailures: after all inputs were processed, when some were missing
            or unreadable; names each one and keeps the masks that were written.
        FitplanError: two inputs would write the same file, or a mask would
            overwrite an input (before anything is written).
        RunDirError: the run folder is incomplete.
    """
    out = Path(out_dir)
    items, failed = collect_inputs(inputs)
    _check_names(items, out)
    written: list[Path] = []
    if items:
        run = run or load_run(run_dir)
    for i, (src, name) in enumerate(items):
        try:
            image = read_image(src, run.plan.data)
            classes = run.predict_classes(image)
            target = out / f"{name}.png"
            write_bytes(target, encode_mask(classes, run.num_classes))
            if overlay:
                write_bytes(out / f"{name}_overlay.png", _png(overlay_image(image, classes)))
            written.append(target)
        except DataError as exc:
            failed.append((src, exc.message))
        if progress is not None:
            progress(i + 1, len(items), src)
    if failed:
        raise PredictionFailures(written, failed)
    return written


__all__ = ["PredictionFailures", "collect_inputs", "encode_mask", "overlay_image", "predict"]
