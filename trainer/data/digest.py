"""The dataset digest: one rule, used by `fitplan scan` and by the trainer.

The scan writes the digest into the fingerprint and the planner copies it into
`plan.data.fingerprint`; the trainer recomputes it to tell whether the data it is
about to train on is the data the plan was made for (`trainer.train.preflight`). Both
sides call `digest_entries`, so they cannot drift apart.

The digest is SHA-256 over every file the pairing sees (pairs, unpaired files and
duplicates): relative path, size and content hash, in path order. Content, not
mtimes: a copy (`cp -r`, `git clone`, rsync without -t) keeps the digest, a
same-size edit within one timestamp tick does not. Relative paths keep it
independent of where the dataset lives.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from trainer.data.filecache import DataCache, stat_key
from trainer.data.pairs import find_pairs

_CHUNK = 1 << 20


def digest_entries(entries: Iterable[tuple[str, int, str]]) -> str:
    """The digest of `(relative posix path, size in bytes, sha256 hex)` entries, any order.

    A file that could not be read enters with size and hash as far as they were
    read (`0, ""` for a missing file or a pipe), so it still changes the digest.
    """
    h = hashlib.sha256(b"fitplan-dataset-digest-v1\n")
    for name, size, sha in sorted(entries, key=lambda t: t[0]):
        h.update(os.fsencode(name) + b"\0" + f"{size}\0{sha}\n".encode())
    return "sha256:" + h.hexdigest()


def hash_file(path: str | os.PathLike) -> tuple[int, str]:
    """`(size, sha256 hex)` of a regular file; `(0, "")` for anything unreadable or not a file.

    Pipes and devices are never opened: reading a FIFO named `x.png` would block forever.
    """
    try:
        st = os.stat(path)
    except OSError:
        return 0, ""
    if not stat.S_ISREG(st.st_mode):
        return 0, ""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
    except OSError:
        return st.st_size, ""
    return st.st_size, h.hexdigest()


def dataset_digest(
    root: str | os.PathLike, images: str = "images", masks: str = "masks", *, cache: bool = True
) -> str:
    """Recompute the scan's digest of the dataset at `root`.

    Args:
        root, images, masks: the dataset.
        cache: reuse content hashes of files whose `stat` is unchanged since an earlier
            call (`trainer.data.filecache`), so a resume or a step-down reads no file;
            `False`: read every file.

    Raises:
        DataError: `root` or one of its folders does not exist.
    """
    root = Path(root)
    found = find_pairs(root, images, masks)
    files = [f for p in found.pairs for f in (p.image, p.mask)]
    files += found.unpaired_images + found.unpaired_masks + found.duplicates
    known = DataCache.open(root, images, masks) if cache else DataCache.disabled()

    def one(path: Path) -> tuple[int, str]:
        key = stat_key(path)
        sha = known.get(path, "sha256", key)
        if sha is not None:
            return key[0], sha
        size, sha = hash_file(path)
        if sha and stat_key(path) == key:
            known.put(path, "sha256", key, sha)
        return size, sha

    # hashlib releases the GIL on large buffers: threads overlap reading and hashing.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        sums = list(pool.map(one, files))
    known.save()
    return digest_entries(
        (Path(os.path.relpath(f, root)).as_posix(), size, sha)
        for f, (size, sha) in zip(files, sums, strict=True)
    )
