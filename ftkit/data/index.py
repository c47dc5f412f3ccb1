"""The index of a data folder: what a run must know of each sample before
training, computed once per state of the folder's files, in worker processes,
and kept in a cache on disk.

What it holds, per sample: the image's (w, h) as a viewer shows it (EXIF
orientation applied); for segmentation the mask's label values and their pixel
counts, at the mask's own size and, for ``--resize squash``, at the square it is
resized to. Computing it decodes every image (``check_image``) and reads every
mask (``read_mask``), so a broken file stops the run here, before training,
named by the same line as when training reads it.

The cache: ``$FTKIT_CACHE`` (default ``platformdirs.user_cache_dir("ftkit")``),
``index/``, one JSON file per data folder (its resolved path), task and
``FORMAT``, written atomically (a temporary file, then a rename). A sample's
record is trusted while its files have the sizes and modification times (ns) it
recorded: a file added, edited or replaced is checked again, on its own, and the
others are not. That is the folder's ``fingerprint`` (paths and sizes) per file,
plus the times, which see an edit that keeps a file's size. A file modified
under ``RACY_SECONDS`` before the check could be edited again within the same
step of a coarse file-system clock, keeping its time (git's "racily clean"
files): its record also holds a digest of its bytes, taken before it is decoded,
which a later start compares (reading the file, not decoding it) until the file
has aged. ``check_image``'s ``image_size`` (its JPEG draft scale) is not part of
the key: a draft decode still reads every byte, and the size is taken before it.

A cache folder that cannot be written stops nothing: one warning per process,
and the index lives in memory for this run.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Generator, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from ftkit.data.images import check_image, read_mask, reason
from ftkit.data.transforms import IGNORE_INDEX, check_label_range, resize_mask

FORMAT = 1  # bump when a record's layout or meaning changes
CACHE_ENV = "FTKIT_CACHE"
RACY_SECONDS = 2.0  # longer than any file-system clock's step (FAT's is 2 s)
PARALLEL_FROM = 64  # files to check before worker processes pay for themselves
PER_WORKER = 32  # at least this many files per worker process

Histogram = tuple[list[int], list[int]]  # label values (ascending), pixels of each
Stamp = tuple[int, ...]  # (size, mtime_ns) of the image, then of the mask if any


class Facts(NamedTuple):
    """One sample's index entry: its image's oriented (w, h); for segmentation,
    its mask's label histogram at full size and at ``squash_to`` (else None)."""

    size: tuple[int, int]
    labels: Histogram | None = None
    squashed: Histogram | None = None


def index_folder(
    root: Path,
    task: str,
    samples: Sequence[tuple[Path, Path | None]],
    *,
    image_size: int,
    squash_to: int | None = None,
) -> list[Facts]:
    """The facts of each ``(image, mask or None)`` of ``root``, in order, from the
    cache where its files are unchanged, else by checking them (in parallel): the
    first broken file, in order, raises its ``UsageError``. ``image_size`` is
    ``check_image``'s draft size; ``squash_to`` asks for masks' histograms at
    that square (``--resize squash``)."""
    racy = time.time_ns() - int(RACY_SECONDS * 1e9)  # files modified since: digested
    stamps = [_stamp(image, mask) for image, mask in samples]
    keys = [relative_posix(image, root) for image, _ in samples]
    path, where = cache_file(root, task)
    known = _read(path, where, task) if path is not None else {}
    records: dict[str, dict[str, Any]] = {}
    facts: list[Facts | None] = []
    todo: list[int] = []
    changed = False
    for i, (key, stamp) in enumerate(zip(keys, stamps, strict=True)):
        image, mask = samples[i]
        record = known.get(key)
        found = _facts(record, stamp, image, mask, root, squash_to)
        facts.append(found)
        if found is None:
            todo.append(i)
            continue
        assert isinstance(record, dict)
        if "digest" in record and max(stamp[1::2]) < racy:  # aged: its times suffice now
            record = {k: v for k, v in record.items() if k != "digest"}
            changed = True
        records[key] = record
    changed = changed or bool(todo) or set(known) != set(records)
    jobs: list[Job] = [
        (str(samples[i][0]), None if samples[i][1] is None else str(samples[i][1]),
         image_size, squash_to, max(stamps[i][1::2]) >= racy)
        for i in todo
    ]  # fmt: skip
    checked = _checked(jobs, root)
    try:
        for i, (size, labels, squashed, digest) in zip(todo, checked, strict=False):
            facts[i] = fact = Facts(size, labels, squashed)
            if -1 not in stamps[i] and digest != []:  # [] : the digest could not be taken
                records[keys[i]] = _record(stamps[i], samples[i][1], root, fact, squash_to, digest)
    finally:  # what was checked is kept, also when a broken file stops the pass
        checked.close()
        if path is not None and changed:
            write_json(path, {"format": FORMAT, "task": task, "root": where, "samples": records})
    done = [f for f in facts if f is not None]
    assert len(done) == len(samples)
    return done


def cache_dir() -> Path:
    given = os.environ.get(CACHE_ENV)
    if given:
        return Path(given)
    import platformdirs

    return Path(platformdirs.user_cache_dir("ftkit"))


def cache_file(root: Path, task: str) -> tuple[Path | None, str]:
    """Where the index of ``root`` for ``task`` is kept (None: nowhere), and
    ``root`` resolved, which the file names inside."""
    try:
        where = str(root.resolve())
    except OSError:
        return None, str(root)
    digest = hashlib.sha256(f"{FORMAT}\0{task}\0{where}".encode(errors="surrogateescape"))
    return cache_dir() / "index" / f"{task}-{digest.hexdigest()[:24]}.json", where


# --- records ---------------------------------------------------------------------
# {"image": [size, mtime_ns], "size": [w, h]}, for segmentation also "mask": [path,
# size, mtime_ns], "labels": [values, counts], "squashed": {"S": [values, counts]},
# and for files modified just before the check "digest": [image's, mask's].


def _stamp(image: Path, mask: Path | None) -> Stamp:
    """(size, mtime_ns) of the image, and of the mask if any; -1s for a file
    that cannot be seen (the pass then names it)."""
    stamp: Stamp = ()
    for path in (image,) if mask is None else (image, mask):
        try:
            st = os.stat(path)
            stamp += (st.st_size, st.st_mtime_ns)
        except OSError:
            stamp += (-1, -1)
    return stamp


def _facts(
    record: Any, stamp: Stamp, image: Path, mask: Path | None, root: Path, squash_to: int | None
) -> Facts | None:
    """The facts of a cached ``record`` whose files still match ``stamp`` (and
    its digests, if any), else None."""
    if not isinstance(record, dict) or -1 in stamp:
        return None
    try:
        if record["image"] != list(stamp[:2]):
            return None
        w, h = record["size"]
        size = (int(w), int(h))
        labels = squashed = None
        if mask is not None:
            if record["mask"] != [relative_posix(mask, root), *stamp[2:]]:
                return None
            labels = _histogram_of(record["labels"])
            if squash_to is not None:
                if str(squash_to) not in record["squashed"]:
                    return None
                squashed = _histogram_of(record["squashed"][str(squash_to)])
        elif "mask" in record:
            return None
        if "digest" in record and record["digest"] != digests(image, mask):
            return None
        return Facts(size, labels, squashed)
    except (TypeError, ValueError, KeyError, OSError):
        return None  # a record of another shape, a file gone: checked again


def _histogram_of(pair: Any) -> Histogram:
    values, counts = pair
    if len(values) != len(counts):
        raise ValueError("values and counts differ in length")
    return [int(v) for v in values], [int(c) for c in counts]


def _record(
    stamp: Stamp,
    mask: Path | None,
    root: Path,
    facts: Facts,
    squash_to: int | None,
    digest: list[str] | None,
) -> dict[str, Any]:
    record: dict[str, Any] = {"image": list(stamp[:2]), "size": list(facts.size)}
    if mask is not None and facts.labels is not None:
        record["mask"] = [relative_posix(mask, root), *stamp[2:]]
        record["labels"] = list(facts.labels)
        record["squashed"] = {} if facts.squashed is None else {str(squash_to): facts.squashed}
    if digest is not None:
        record["digest"] = digest
    return record


def digests(image: Path, mask: Path | None) -> list[str]:
    """A digest of the bytes of the image, and of the mask if any."""
    return [
        hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()
        for path in ((image,) if mask is None else (image, mask))
    ]


def relative_posix(path: Path, root: Path) -> str:
    """``path`` inside ``root``, with / (by the strings: pathlib's own costs ~10x)."""
    text, base = str(path), str(root)
    if text.startswith(base + os.sep):
        return text[len(base) + 1 :].replace(os.sep, "/")
    return path.relative_to(root).as_posix()


# --- the cache file ------------------------------------------------------------

_warned: set[str] = set()


def _read(path: Path, root: str, task: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f, _collector_paused():
            data = json.load(f)
    except (OSError, ValueError):  # none yet, unreadable or cut short: all checked again
        return {}
    ok = (
        isinstance(data, dict)
        and data.get("format") == FORMAT
        and data.get("task") == task
        and data.get("root") == root
        and isinstance(data.get("samples"), dict)
    )
    return data["samples"] if ok else {}


@contextlib.contextmanager
def _collector_paused() -> Generator[None, None, None]:
    """The cyclic garbage collector off while JSON builds its many small objects
    (none of them cyclic): with torch imported, a full collection that they would
    set off costs ~100 times the parse."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically: a reader sees the old index or the new one, never half of one.
    JSON with ASCII escapes, so names that are not UTF-8 survive the round trip."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="ascii") as f:
                json.dump(data, f, separators=(",", ":"))
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
    except OSError as exc:
        folder = str(path.parent.parent)
        if folder not in _warned:
            _warned.add(folder)
            print(
                f"ftkit: warning: cannot write the data index cache in '{folder}' "
                f"({reason(exc)}); every start checks the data again: set {CACHE_ENV} "
                f"to a writable folder",
                file=sys.stderr,
                flush=True,
            )


# --- the pass over the files ---------------------------------------------------

# image, mask, draft size, squash size, whether to digest the files first
Job = tuple[str, str | None, int, int | None, bool]
Checked = tuple[tuple[int, int], Histogram | None, Histogram | None, list[str] | None]


def check(job: Job) -> Checked:
    """Decode one sample's files as training will (in a worker process). A digest,
    when asked, is of the bytes before the decode: a file that changes between
    the two is read again next time, never trusted."""
    image, mask, draft, squash_to, digest = job
    kept = None
    if digest:
        try:
            kept = digests(Path(image), None if mask is None else Path(mask))
        except OSError:
            kept = []  # not recorded; the decode names the file
    size = check_image(Path(image), draft)
    if mask is None:
        return size, None, None, kept
    array = read_mask(Path(mask), Path(image), size)
    squashed = None
    if squash_to is not None:
        squashed = histogram(resize_mask(torch.from_numpy(array), squash_to).numpy())
    return size, histogram(array), squashed, kept


def histogram(mask: np.ndarray) -> Histogram:
    values, counts = np.unique(mask, return_counts=True)
    return values.tolist(), counts.tolist()


def workers(files: int) -> int:
    """Worker processes for ``files``: every core this process may use, each with
    ``PER_WORKER`` files or more; 1 (no pool) under ``PARALLEL_FROM`` files."""
    if files < PARALLEL_FROM:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, files // PER_WORKER))


def _checked(jobs: list[Job], root: Path) -> Generator[Any, None, None]:
    """``check`` of each job, in order, with a progress bar on a terminal."""
    if not jobs:
        return
    from tqdm import tqdm

    n = workers(len(jobs))
    with tqdm(
        total=len(jobs), desc=f"checking '{root.name}'", unit="file", leave=False, disable=None
    ) as bar:
        if n == 1:
            for job in jobs:
                yield check(job)
                bar.update(1)
            return
        chunk = max(1, min(256, len(jobs) // (n * 4)))
        pool = ProcessPoolExecutor(n)
        try:
            for result in pool.map(check, jobs, chunksize=chunk):
                yield result
                bar.update(1)
        finally:  # a broken file: the chunks not started are dropped
            pool.shutdown(wait=True, cancel_futures=True)


# --- label pixels per sample, compact ------------------------------------------


class LabelPixels:
    """Each sample's label histogram, held flat: sample i's values are
    ``values[offsets[i]:offsets[i + 1]]``, their pixels ``counts[...]``. A few
    integers per sample, where its mask would be height x width of them."""

    def __init__(self, rows: Iterable[Histogram]) -> None:
        rows = list(rows)
        lengths = np.fromiter((len(v) for v, _ in rows), np.int64, count=len(rows))
        self.offsets = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(lengths, out=self.offsets[1:])
        total = int(self.offsets[-1])
        self.values = np.fromiter((x for v, _ in rows for x in v), np.int64, count=total)
        self.counts = np.fromiter((x for _, c in rows for x in c), np.int64, count=total)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def row(self, i: int) -> Histogram:
        at = slice(int(self.offsets[i]), int(self.offsets[i + 1]))
        return self.values[at].tolist(), self.counts[at].tolist()

    def take(self, indices: Iterable[int]) -> LabelPixels:
        return LabelPixels(self.row(i) for i in indices)

    def __add__(self, other: LabelPixels) -> LabelPixels:
        joined = LabelPixels([])
        joined.values = np.concatenate([self.values, other.values])
        joined.counts = np.concatenate([self.counts, other.counts])
        joined.offsets = np.concatenate([self.offsets, other.offsets[1:] + self.offsets[-1]])
        return joined

    def totals(self, num_classes: int) -> list[int]:
        """Pixels per class over all samples, 255 left out; a label outside
        0..num_classes-1 is refused as ``count_labels`` refuses it."""
        keep = self.values != IGNORE_INDEX
        values, counts = self.values[keep], self.counts[keep]
        if values.size:
            check_label_range(int(values.min()), int(values.max()), num_classes)
        totals = np.zeros(num_classes, np.int64)
        np.add.at(totals, values, counts)
        return totals.tolist()
