"""Samples as tensors: a source yields them at their final size, ``SampleDataset``
augments (torchvision ``transforms.v2``) and normalises them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import torch
from torch.utils.data import Dataset, default_collate
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from ftkit.data import IMAGENET_MEAN, IMAGENET_STD
from ftkit.data.augment import canonical, parse, segmentation_problem
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


# Pixels a geometric transform brings in: black in the image, ignored in the mask.
FILL = {tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}


def augmentations(spec: str, size: tuple[int, int]) -> list[v2.Transform]:
    """``--augment``'s transforms (see ``ftkit.data.augment``) for images of ``size``.

    v2 draws one set of random parameters per call and applies it to the Image
    and its Mask together; mask kernels always sample nearest, so labels are
    never blended. Photometric transforms pass masks through untouched."""
    steps: list[v2.Transform] = []
    for name, a in parse(spec):
        if name == "crop":
            steps.append(v2.RandomResizedCrop(list(size), scale=(a["scale"], 1.0), antialias=True))
        elif name == "hflip":
            steps.append(v2.RandomHorizontalFlip(a["p"]))
        elif name == "vflip":
            steps.append(v2.RandomVerticalFlip(a["p"]))
        elif name == "rotate":
            steps.append(v2.RandomRotation(a["degrees"], fill=FILL))
        elif name == "jitter":
            steps.append(v2.ColorJitter(a["brightness"], a["contrast"], a["saturation"], a["hue"]))
        elif name == "randaugment":
            steps.append(v2.RandAugment(int(a["num_ops"]), int(a["magnitude"])))
        elif name == "trivialaugment":
            steps.append(v2.TrivialAugmentWide())
    return steps


def build_transform(
    *, augment: str, mean: Sequence[float], std: Sequence[float], size: tuple[int, int]
) -> v2.Compose:
    # ToDtype(dtype) and Normalize touch images only; masks keep their labels.
    steps = augmentations(augment, size)
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(steps)


class MixCollate:
    """A DataLoader ``collate_fn``: the batch as usual, then MixUp or CutMix
    (one at random per batch when both are on, as timm does). Labels become
    (N, C) probabilities, which cross-entropy takes as they are."""

    def __init__(self, num_classes: int, mixup: float | None, cutmix: float | None) -> None:
        mixers: list[v2.Transform] = []
        if mixup:
            mixers.append(v2.MixUp(alpha=mixup, num_classes=num_classes))
        if cutmix:
            mixers.append(v2.CutMix(alpha=cutmix, num_classes=num_classes))
        self.mix = mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)

    def __call__(self, batch: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = default_collate(batch)
        return self.mix(images, labels)


class SampleDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    def __init__(
        self,
        source: Source,
        task: str,
        *,
        augment: str | bool = "none",
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        try:
            augment = canonical(augment)
        except ValueError as exc:
            raise UsageError(f"--augment: {exc}") from None
        if task == "segmentation":
            problem = segmentation_problem(augment)
            if problem:
                raise UsageError(problem)
        self.source = source
        self.task = task
        self.augment = augment
        self.mean = tuple(mean)
        self.std = tuple(std)
        # By image size, as a random crop needs it; sources yield one final size.
        self._transforms: dict[tuple[int, int], v2.Compose] = {}

    def __len__(self) -> int:
        return len(self.source)

    def transform(self, size: tuple[int, int]) -> v2.Compose:
        if size not in self._transforms:
            self._transforms[size] = build_transform(
                augment=self.augment, mean=self.mean, std=self.std, size=size
            )
        return self._transforms[size]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = tv_tensors.Image(self.source.image(index))
        target = self.source.target(index)
        transform = self.transform((image.shape[-2], image.shape[-1]))
        if self.task == "segmentation":
            image, mask = transform(image, tv_tensors.Mask(target))
            # Plain tensors out: tv_tensor subclasses surprise code downstream.
            return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)
        return transform(image).as_subclass(torch.Tensor), target

    @property
    def deterministic(self) -> bool:
        return not parse(self.augment)

    def with_transforms(
        self, *, augment: str | bool, mean: Sequence[float], std: Sequence[float]
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
