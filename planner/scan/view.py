"""Render a fingerprint for people: one warning line per problem, and a summary table."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

# Unpaired files are listed by name up to this many per side, then counted.
MAX_NAMED = 20


def _safe(s: str) -> str:
    # File names that are not valid UTF-8 arrive as surrogate escapes; a terminal can't print them.
    return s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def warnings(fp: dict[str, Any]) -> list[str]:
    """One line per problem in the fingerprint, each naming the file (paths relative to root)."""
    lines = []
    for e in fp["excluded"]:
        other = e["mask"] if e.get("file", e["image"]) == e["image"] else e["image"]
        lines.append(f"{e.get('file', e['image'])}: {e['problem']}; pair with {other} excluded")
    for key, what in (
        ("unpaired_images", "no mask for this image"),
        ("unpaired_masks", "no image for this mask"),
    ):
        paths = fp.get(key, [])
        lines += [f"{p}: {what}" for p in paths[:MAX_NAMED]]
        if len(paths) > MAX_NAMED:
            lines.append(f"... and {len(paths) - MAX_NAMED} more ({key} in the fingerprint)")
    lines += [
        f"{p}: another file has the same name with another extension; this one is ignored"
        for p in fp.get("duplicates", [])
    ]
    lines += [f"{n['file']}: {n['note']}" for n in fp.get("notes", [])]
    skipped = fp.get("skipped", {"count": 0, "listed": []})
    others = [s for s in skipped["listed"] if s["reason"] != "not an image file"]
    lines += [f"{s['path']}: {s['reason']}" for s in others]
    n_other = skipped["count"] - len(others)
    if n_other > 0:
        examples = ", ".join(
            s["path"] for s in skipped["listed"] if s["reason"] == "not an image file"
        )
        lines.append(f"{n_other} files that are not images were skipped (e.g. {examples[:200]})")
    return [_safe(line) for line in lines]


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in d.items()) or "-"


def scan_table(fp: dict[str, Any]) -> RenderableType:
    """A rich summary of the fingerprint: pairs, problems, image shapes, mask values, speed."""
    t = Table(title=f"dataset {_safe(fp['root'])}", show_header=False, title_justify="left")
    t.add_column("field", style="bold")
    t.add_column("value")
    size = fp["image_size"]
    sizes = "-"
    if size["min"]:
        hist = ", ".join(f"{k}: {v}" for k, v in list(size["histogram"].items())[:5])
        sizes = f"min {size['min']}, median {size['median']}, max {size['max']} (HxW); {hist}"
    values = "-"
    if fp["mask_values"]:
        shares = fp["class_pixel_share"] or [None] * len(fp["mask_values"])
        names = fp.get("class_names") or [None] * len(fp["mask_values"])
        values = ", ".join(
            f"{v}" + (f" {n}" if n else "") + (f" ({s:.1%})" if s is not None else "")
            for v, n, s in zip(fp["mask_values"], names, shares, strict=True)
        )
    ignored = "-"
    if fp.get("ignore_index") is not None:
        ignored = (
            f"{fp['ignore_index']} ({fp.get('ignore_share', 0):.1%} of mask pixels; "
            "left out of loss and metrics)"
        )
    rare = ", ".join(
        f"{r['value']} ({r['share']:.3%}, {'a class' if r['class'] else 'to nearest class'})"
        for r in fp.get("rare_values", [])[:8]
    )
    rows = [
        ("folders", f"{fp['images']}/ + {fp['masks']}/"),
        ("pairs", str(fp["pairs"])),
        ("excluded", str(len(fp["excluded"]))),
        ("unpaired", f"{len(fp['unpaired_images'])} images, {len(fp['unpaired_masks'])} masks"),
        ("formats", _counts(fp["image_formats"])),
        ("image modes", _counts(fp["image_modes"])),
        ("mask modes", _counts(fp["mask_modes"])),
        ("bit depths", _counts(fp["bit_depths"])),
        ("image size", sizes),
        ("task", f"{fp['task']} ({fp['classes']} classes)"),
        ("mask values", values),
        ("ignore value", ignored),
        ("rare values", rare or "-"),
        ("fringe", f"{fp['mask_fringe_share']:.3%} of mask pixels between class values"),
        ("masks decoded", f"{fp['masks_decoded']} of {fp['pairs']}"),
        ("on disk", _bytes(fp["total_bytes"])),
        ("decoded (uint8)", _bytes(fp["decoded_bytes"])),
        (
            "scan",
            f"{fp['files']} files in {fp['scan_time_s']:.2f} s ({fp['files_per_s']:.0f} files/s)",
        ),
        ("digest", fp["digest"]),
    ]
    for name, value in rows:
        t.add_row(name, Text(_safe(value)))
    parts: list[RenderableType] = [t]
    for s in fp["suggestions"]:
        parts.append(Text(f"suggestion: {_safe(s)}", style="cyan"))
    return Group(*parts)
