"""Datasets: the built-in ``shapes`` set and folders on disk, as train/val splits.

``load_data`` turns ``--data`` into a ``DataSplits``. ``builtin:NAME`` asks the
dataset registry (filled by ``ftkit_register_datasets`` hooks); anything else
is a folder (see ``ftkit.data.folders`` for the layouts). Items are
``(image, target)``: a float32 (3, H, W) image normalised with mean/std, and an
int64 (H, W) mask (255 = ignore) or an int64 scalar class.

This module and ``builtin`` are imported at CLI start-up, so torch, numpy and
PIL are imported inside functions only.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ftkit.errors import PluginError, UsageError, unknown
from ftkit.tasks import TARGETS

if TYPE_CHECKING:
    from ftkit.data.builtin import Dataset as BuiltinDataset
    from ftkit.data.transforms import TrainCrop
    from ftkit.registry import Registry

from ftkit.data.imagenet import IMAGENET_MEAN, IMAGENET_STD
from ftkit.data.splits import DataSplits


def load_data(
    spec: str,
    task: str,
    registry: Registry[BuiltinDataset],
    *,
    image_size: int = 64,
    num_samples: int = 256,
    seed: int = 0,
    augment: str | bool = "flip",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    val_fraction: float = 0.2,
    num_classes: int | None = None,
    mixup: float | None = None,
    cutmix: float | None = None,
    resize: str = "keep",
    crop: TrainCrop | None = None,
) -> DataSplits:
    """Open ``builtin:NAME`` or a dataset folder as train/val splits.

    ``augment``, ``mixup`` and ``cutmix`` are the options of the same names.
    ``num_samples`` and ``seed`` shape built-in datasets; ``val_fraction`` splits
    a folder that has no ``train/`` and ``val/``; ``resize`` is a folder's geometry
    (see ``ftkit.data.folders``), ``crop`` its segmentation training crop.
    ``num_classes`` (the user's ``--num-classes``) may exceed the classes the data
    shows; for segmentation folders it is also the bound every mask label is
    checked against.
    """
    if task not in TARGETS:
        raise unknown("task", task, TARGETS)
    if image_size < 1:
        raise UsageError(f"image size must be at least 1, got {image_size}")
    if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
        raise UsageError(f"mean and std need 3 values each (std > 0), got {mean} and {std}")
    if num_classes is not None and num_classes < 1:
        raise UsageError(f"number of classes must be at least 1, got {num_classes}")

    if spec.startswith("builtin:"):
        if crop is not None:
            raise UsageError("--crop crops a data folder's images; built-in sets are made square")
        splits = _load_builtin(spec, task, registry, image_size, num_samples, seed)
        if num_classes is not None:
            splits = _widen(splits, num_classes, spec)
    else:
        from ftkit.data.folders import load_folder

        path = Path(spec)
        if not path.exists():
            hint = f" (did you mean 'builtin:{spec}'?)" if spec in registry else ""
            raise UsageError(
                f"dataset folder '{spec}' not found{hint}; expected builtin:NAME or a folder"
            )
        splits = load_folder(
            path,
            task,
            image_size=image_size,
            val_fraction=val_fraction,
            num_classes=num_classes,
            resize=resize,
            crop=crop,
        )
    return splits.with_transforms(augment=augment, mean=mean, std=std, mixup=mixup, cutmix=cutmix)


def _load_builtin(
    spec: str,
    task: str,
    registry: Registry[BuiltinDataset],
    image_size: int,
    num_samples: int,
    seed: int,
) -> DataSplits:
    name = spec.removeprefix("builtin:")
    if name not in registry:
        raise unknown("dataset", spec, [f"builtin:{n}" for n in registry.names()])
    factory = registry.get(name).factory
    splits = factory(task=task, image_size=image_size, num_samples=num_samples, seed=seed)
    if not isinstance(splits, DataSplits) or splits.task != task:
        raise PluginError(
            f"dataset '{spec}' returned {type(splits).__name__}; expected a DataSplits "
            f"for task '{task}'"
        )
    return splits


def _widen(splits: DataSplits, num_classes: int, spec: str) -> DataSplits:
    """Give the model more outputs than the data has classes, never fewer."""
    if num_classes == splits.num_classes:
        return splits
    if num_classes < splits.num_classes:
        raise UsageError(
            f"--num-classes {num_classes} is fewer than the {splits.num_classes} classes of "
            f"'{spec}' ({', '.join(splits.class_names)})"
        )
    extra = [f"class_{i}" for i in range(splits.num_classes, num_classes)]
    return replace(splits, num_classes=num_classes, class_names=[*splits.class_names, *extra])


# --- what a run directory records of its data ----------------------------------------


def is_folder(spec: str) -> bool:
    """True when ``--data`` names a folder on disk (not ``builtin:NAME``)."""
    return not spec.startswith("builtin:") and Path(spec).is_dir()


def fingerprint(folder: str) -> str:
    """'N files, B bytes, sha256:H' over the sorted relative paths and sizes of
    the files in ``folder`` (hidden ones skipped, as the loaders skip them).

    Sizes, not contents: hashing every byte of a large data set would cost
    minutes at each start. A file edited to exactly the same size goes unseen.
    """
    entries = []
    for here, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith("."):
                path = os.path.join(here, name)
                entries.append((os.path.relpath(path, folder).replace(os.sep, "/"), path))
    digest = hashlib.sha256()
    total = 0
    for rel, path in sorted(entries):
        size = os.stat(path).st_size
        total += size
        # a name that is not UTF-8 comes back from the OS with surrogate escapes
        digest.update(f"{rel}\0{size}\n".encode(errors="surrogateescape"))
    return f"{len(entries)} files, {total} bytes, sha256:{digest.hexdigest()[:16]}"


def check_fingerprint(folder: str, recorded: str, run: str) -> None:
    """Refuse data that changed since run ``run`` recorded its fingerprint."""
    if not Path(folder).is_dir():
        raise UsageError(f"data folder '{folder}' of run '{run}' not found; was it moved?")
    now = fingerprint(folder)
    if now == recorded:
        return
    then, counts = _counts(recorded), _counts(now)
    if then is None or counts is None:  # not a fingerprint ftkit wrote
        change = f"recorded '{recorded}', now '{now}'"
    else:
        (files_then, bytes_then), (files_now, bytes_now) = then, counts
        if files_now != files_then:
            more = files_now - files_then
            change = f"{abs(more)} file(s) {'added' if more > 0 else 'removed'}"
        elif bytes_now != bytes_then:
            change = f"the same number of files, {bytes_now - bytes_then:+d} bytes"
        else:
            change = "files renamed or resized"
        change += f" ({files_then} files then, {files_now} now)"
    raise UsageError(f"data in '{folder}' changed since run '{run}': {change}")


def _counts(fp: str) -> tuple[int, int] | None:
    match = re.fullmatch(r"(\d+) files, (\d+) bytes, sha256:\w+", fp)
    return (int(match[1]), int(match[2])) if match else None
