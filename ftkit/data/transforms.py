"""Samples as tensors: a source yields them at their final size, ``SampleDataset``
augments (torchvision ``transforms.v2``) and normalises them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from ftkit.data import IMAGENET_MEAN, IMAGENET_STD
from ftkit.errors import UsageError

IGNORE_INDEX = 255


class Source(Protocol):
    """Samples at their final size, before augmentation and normalisation."""

    def __len__(self) -> int: ...

    def image(self, index: int) -> torch.Tensor:
        """A uint8 (3, H, W) image."""
        ...

    def target(self, index: int) -> torch.Tensor:
        """An int64 (H, W) mask for segmentation, an int64 scalar for classification.
        Reading it must be cheap: ``label_counts`` reads every training target."""
        ...


def build_transform(*, augment: bool, mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    steps: list[v2.Transform] = []
    if augment:
        # One random draw per call flips the Image and its Mask together.
        steps.append(v2.RandomHorizontalFlip())
    # ToDtype(dtype) and Normalize touch images only; masks keep their labels.
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(steps)


class SampleDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    def __init__(
        self,
        source: Source,
        task: str,
        *,
        augment: bool = False,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.source = source
        self.task = task
        self.augment = augment
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.transform = build_transform(augment=augment, mean=mean, std=std)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = tv_tensors.Image(self.source.image(index))
        target = self.source.target(index)
        if self.task == "segmentation":
            image, mask = self.transform(image, tv_tensors.Mask(target))
            # Plain tensors out: tv_tensor subclasses surprise code downstream.
            return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)
        return self.transform(image).as_subclass(torch.Tensor), target

    @property
    def deterministic(self) -> bool:
        return not self.augment

    def with_transforms(
        self, *, augment: bool, mean: Sequence[float], std: Sequence[float]
    ) -> SampleDataset:
        return SampleDataset(self.source, self.task, augment=augment, mean=mean, std=std)


def resize_image(image: torch.Tensor, size: int) -> torch.Tensor:
    if image.shape[-2:] == (size, size):
        return image
    return F.resize(image, [size, size], antialias=True)


def resize_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    if mask.shape[-2:] == (size, size):
        return mask
    # NEAREST_EXACT samples pixel centres (like PIL), so no label drifts by half a pixel.
    resized = F.resize(mask[None], [size, size], interpolation=v2.InterpolationMode.NEAREST_EXACT)
    return resized[0]


def count_labels(dataset: Dataset, task: str, num_classes: int) -> list[int]:
    """Per-class pixel (segmentation, 255 ignored) or sample counts of a dataset."""
    n = len(dataset)  # type: ignore[arg-type]
    targets: Iterable[torch.Tensor]
    if isinstance(dataset, SampleDataset):
        targets = (dataset.source.target(i) for i in range(n))  # no image decoding
    else:
        targets = (torch.as_tensor(dataset[i][1]) for i in range(n))
    counts = torch.zeros(num_classes, dtype=torch.int64)
    for target in targets:
        labels = target.reshape(-1).long()
        if task == "segmentation":
            labels = labels[labels != IGNORE_INDEX]
        if labels.numel() == 0:
            continue
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= num_classes:
            bad = low if low < 0 else high
            raise UsageError(
                f"training label {bad} is out of range for {num_classes} classes "
                f"(expected 0..{num_classes - 1})"
            )
        counts += torch.bincount(labels, minlength=num_classes)
    return counts.tolist()
