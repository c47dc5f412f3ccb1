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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftkit.errors import PluginError, UsageError, unknown
from ftkit.tasks import TARGETS

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from ftkit.data.builtin import Dataset as BuiltinDataset
    from ftkit.data.transforms import TrainCrop
    from ftkit.registry import Registry

__all__ = ["DataSplits", "check_fingerprint", "fingerprint", "is_folder", "load_data"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class DataSplits:
    task: str
    train: Dataset
    val: Dataset
    num_classes: int
    class_names: list[str]
    # The training loader's collate_fn: batches mixed by MixUp/CutMix, or None.
    collate: Callable[[list[Any]], Any] | None = field(default=None, repr=False)
    _label_counts: list[int] | None = field(default=None, init=False, repr=False, compare=False)

    def label_counts(self) -> list[int]:
        """Per-class counts over the training labels: pixels for segmentation
        (255 ignored), samples for classification. Computed once."""
        if self._label_counts is None:
            from ftkit.data.transforms import count_labels

            self._label_counts = count_labels(self.train, self.task, self.num_classes)
        return list(self._label_counts)

    @property
    def train_is_deterministic(self) -> bool:
        """True when a training item is the same every epoch (no random
        transform), so features computed from it can be cached."""
        from ftkit.data.transforms import SampleDataset

        # A dataset ftkit did not build may augment in ways we cannot see.
        own = isinstance(self.train, SampleDataset) and self.train.deterministic
        return own and self.collate is None

    def with_transforms(
        self,
        *,
        augment: str | bool,
        mean: Sequence[float],
        std: Sequence[float],
        mixup: float | None = None,
        cutmix: float | None = None,
        crop_pct: float = 1.0,
    ) -> DataSplits:
        """The same samples with ftkit's transforms: ``augment`` (see
        ``ftkit.data.augment``) on train, normalisation on both, and MixUp/CutMix
        on training batches; ``crop_pct`` a classifier's centre crop. Datasets
        from third-party plugins keep their own transforms; their batches are
        mixed all the same."""
        from ftkit.data.augment import check_mixing
        from ftkit.data.transforms import MixCollate, SampleDataset

        check_mixing(self.task, mixup, cutmix)
        train, val = self.train, self.val
        if isinstance(train, SampleDataset):
            train = train.with_transforms(augment=augment, mean=mean, std=std, crop_pct=crop_pct)
        if isinstance(val, SampleDataset):
            val = val.with_transforms(
                augment="none", mean=mean, std=std, scoring=True, crop_pct=crop_pct
            )
        # A dataset's own batching (a text task's dynamic padding) is kept.
        own = None if isinstance(self.collate, MixCollate) else self.collate
        if own is not None and (mixup or cutmix):
            raise UsageError("--mixup and --cutmix blend images; this data batches its own items")
        collate = MixCollate(self.num_classes, mixup, cutmix) if mixup or cutmix else own
        splits = replace(self, train=train, val=val, collate=collate)
        splits._label_counts = self._label_counts  # labels do not depend on transforms
        return splits

    def scored(self, split: str) -> DataSplits:
        """The same data with ``split`` as the split that is scored: ``val``, ``train``
        (its images as validation sees them: no augmentation) or ``all`` of them."""
        from torch.utils.data import ConcatDataset

        from ftkit.data.transforms import SampleDataset

        if split == "val":
            return self
        if split not in SCORED_SPLITS:
            raise unknown("split", split, SCORED_SPLITS)
        train = self.train
        if isinstance(train, SampleDataset) and isinstance(self.val, SampleDataset):
            train = train.with_transforms(
                augment="none",
                mean=self.val.mean,
                std=self.val.std,
                scoring=True,
                crop_pct=self.val.crop_pct,
            )
        val = train if split == "train" else ConcatDataset([train, self.val])
        return replace(self, val=val)


SCORED_SPLITS = ("val", "train", "all")


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
