"""Per-channel mean and std of a data set's images, in [0, 1] pixel units (as
``transforms.v2.ToDtype(torch.float32, scale=True)`` reads them), for
``--normalize dataset`` and the plan's check that the data looks like what
the weights were trained on.

A folder's figures are kept in the cache folder of the data index
(``$FTKIT_CACHE/statistics/``), keyed by its images' paths, sizes and
modification times (and the square ``--resize squash`` reads them at): a
second start decodes nothing; an image added or edited measures again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from ftkit.data.index import cache_dir, write_json
from ftkit.data.transforms import SampleDataset

Stats = tuple[tuple[float, ...], tuple[float, ...]]


def channel_statistics(dataset: object, limit: int | None = None) -> Stats | None:
    """Mean and std over every pixel of the first ``limit`` images (all by default)
    as their source yields them: before geometry, augmentation and normalisation,
    so the figures do not depend on either. None for data ftkit did not build."""
    if not isinstance(dataset, SampleDataset) or len(dataset) == 0:
        return None
    count = min(len(dataset), limit or len(dataset))
    cached = _cache_path(dataset, count)
    if cached is not None and cached.is_file():
        try:
            saved = json.loads(cached.read_text())
            return tuple(saved["mean"]), tuple(saved["std"])
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreadable: measured again, and written anew
    stats = _measure(dataset, count)
    if cached is not None:
        write_json(cached, {"mean": list(stats[0]), "std": list(stats[1])})
    return stats


def _cache_path(dataset: SampleDataset, count: int) -> Path | None:
    """Where a folder's figures are kept: named by what they depend on."""
    images = getattr(dataset.source, "images", None)
    if not isinstance(images, list) or not all(isinstance(p, Path) for p in images):
        return None  # not files: an in-memory source, measured each time (cheaply)
    digest = hashlib.sha256(f"v1 {getattr(dataset.source, 'squash_to', None)}\n".encode())
    try:
        for path in images[:count]:
            stat = os.stat(path)
            digest.update(
                f"{os.path.abspath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode(
                    errors="surrogateescape"
                )
            )
    except OSError:
        return None  # a file gone: measuring names it
    return cache_dir() / "statistics" / f"{digest.hexdigest()[:32]}.json"


def _measure(dataset: SampleDataset, count: int) -> Stats:
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    pixels = 0
    for i in range(count):
        image = dataset.source.image(i)
        values = image.double() / 255 if image.dtype == torch.uint8 else image.double()
        flat = values.reshape(values.shape[0], -1)
        total += flat.sum(dim=1)
        squares += (flat * flat).sum(dim=1)
        pixels += flat.shape[1]
    mean = total / pixels
    std = (squares / pixels - mean * mean).clamp(min=0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def far_from(measured: Stats, expected: Stats) -> bool:
    """True when some channel's mean is more than its expected std away, or its
    spread is under a third or over three times the expected one: inputs the
    weights never saw (a 16-bit set using a tenth of its range, for one)."""
    for m, s, em, es in zip(*measured, *expected, strict=True):
        if abs(m - em) > es or not es / 3 <= s <= es * 3:
            return True
    return False
