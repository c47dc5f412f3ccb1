"""``DataSplits``: what ``--data`` becomes (a task's train and validation
datasets, the class names) and the same samples with ftkit's transforms.

Imported at CLI start-up: torch is imported inside functions only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ftkit.errors import UsageError, unknown

if TYPE_CHECKING:
    from torch.utils.data import Dataset

SCORED_SPLITS = ("val", "train", "all")


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
