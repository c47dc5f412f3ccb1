"""Samples as tensors: a source yields them, ``SampleDataset`` brings them to the
model's size, augments (torchvision ``transforms.v2``) and normalises them.

Geometry (``base_size``): a source may yield images at their final size (the
built-in sets, ``--resize squash``), or at their own (``--resize keep``). Then,
as MMSegmentation and timm do, the aspect ratio is kept: the shorter side is
resized to ``base_size``; training takes a random ``base_size`` square of it
(segmentation) or its centre (classification), unless ``--augment`` crops; a
segmentation image is scored whole, its logits resized back to its original
mask, which is never resized (``ftkit.engine.train.loop.evaluate``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch.utils.data import Dataset, default_collate
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from ftkit.data.augment import canonical, parse, segmentation_problem
from ftkit.data.imagenet import IMAGENET_MEAN, IMAGENET_STD
from ftkit.errors import UsageError

IGNORE_INDEX = 255


class Source(Protocol):
    """Samples at their final size, before augmentation and normalisation."""

    def __len__(self) -> int: ...

    def image(self, index: int) -> torch.Tensor:
        """A (3, H, W) image: uint8, or float32 in [0, 1] for deeper pixels."""
        ...

    def target(self, index: int) -> torch.Tensor:
        """An int64 (H, W) mask for segmentation, an int64 scalar for classification.
        ``label_counts`` reads every training target, unless the source gives its
        own ``label_counts(num_classes)`` (a list of ints, see ``count_labels``)."""
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
    *,
    augment: str,
    mean: Sequence[float],
    std: Sequence[float],
    size: tuple[int, int],
    geometry: list[Any] | None = None,
    normalise: bool = True,
) -> v2.Compose:
    """``normalise`` False: the steps before ``Normalise``, which then runs on the device."""
    steps = [*(geometry or []), *augmentations(augment, size)]
    if normalise:
        steps.append(Normalise(mean, std))
    return v2.Compose(steps or [v2.Identity()])  # Compose refuses an empty list


class Normalise:
    """An image, or a batch of them, to float32 normalised by ``mean`` and ``std``,
    in one pass: ``x * (scale / std) - mean / std`` (``torch.addcmul``), where
    ``scale`` brings integers to [0, 1] (uint8 by 1/255, as ``v2.ToDtype`` does)
    and keeps floats as they are, so a 16-bit image read as float keeps every
    one of its levels. It touches the image only (a mask passes through), and
    it is elementwise: a batch on the device gets the values each sample gets."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean, self.std = list(mean), list(std)
        self._factors: dict[tuple[torch.device, float], tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, image: torch.Tensor, *rest: Any) -> Any:
        out = self.apply(image)
        return (out, *rest) if rest else out

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        scale = 1.0 if x.is_floating_point() else 1.0 / torch.iinfo(x.dtype).max
        key = (x.device, scale)
        if key not in self._factors:
            std = torch.tensor(self.std, dtype=torch.float64)[:, None, None]
            mean = torch.tensor(self.mean, dtype=torch.float64)[:, None, None]
            self._factors[key] = (
                (scale / std).to(x.device, torch.float32),
                (-mean / std).to(x.device, torch.float32),
            )
        weight, shift = self._factors[key]
        return torch.addcmul(shift, x.as_subclass(torch.Tensor), weight)


@dataclass(frozen=True)
class TrainCrop:
    """``--crop`` (height, width) and ``--cat-max-ratio``: segmentation training's crop."""

    size: tuple[int, int]
    cat_max_ratio: float | None = None


class CatMaxRatio:
    """MMSegmentation's ``RandomCrop(cat_max_ratio=...)``: up to ``tries`` random
    crops, the first in which no class covers ``ratio`` or more of the labelled
    pixels (255 aside), else the last one drawn."""

    def __init__(self, crop: Any, ratio: float, tries: int = 10) -> None:
        self.crop, self.ratio, self.tries = crop, ratio, tries

    def __call__(self, image: Any, mask: Any) -> Any:
        for _ in range(self.tries):
            image_crop, mask_crop = self.crop(image, mask)
            labels = mask_crop[mask_crop != IGNORE_INDEX]
            counts = torch.bincount(labels.reshape(-1).long())
            counts = counts[counts > 0]
            if len(counts) > 1 and counts.max() < self.ratio * counts.sum():
                break
        return image_crop, mask_crop


# MMSegmentation's RandomResize ratio range: each training image at 0.5-2x the base.
RATIO_RANGE = (0.5, 2.0)


def keep_ratio_geometry(
    task: str,
    base: int,
    augment: str,
    scoring: bool,
    crop: TrainCrop | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    crop_pct: float = 1.0,
) -> list[Any]:
    """The steps from an image of its own size to the model's (see the module doc)."""
    shorter = v2.Resize(base, antialias=True)  # masks resize nearest, always
    # timm's evaluation: the shorter side to base / crop_pct, the centre base square
    centre = [v2.Resize(int(base / crop_pct), antialias=True), v2.CenterCrop(base)]
    if scoring:
        return [shorter] if task == "segmentation" else centre
    if crop is not None:  # --crop: MMSegmentation's RandomResize, then RandomCrop
        low, high = (round(base * r) for r in RATIO_RANGE)
        # in [0, 1] first, so the pad is the mean (0 once normalised) whatever the depth
        fill = {tv_tensors.Image: list(mean), tv_tensors.Mask: IGNORE_INDEX}
        cropper: Any = v2.RandomCrop(list(crop.size), pad_if_needed=True, fill=fill)
        if crop.cat_max_ratio is not None:
            cropper = CatMaxRatio(cropper, crop.cat_max_ratio)
        return [
            v2.RandomResize(low, high + 1, antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            cropper,
        ]
    if any(name == "crop" for name, _ in parse(augment)):
        return []  # RandomResizedCrop takes its crop from the image as it is
    return [shorter, v2.RandomCrop(base)] if task == "segmentation" else centre


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

    # ftkit's own loaders collate as usual and mix on the device, in the training
    # process (engine/train/loop.py: Loop.batch), so loader workers change nothing.


class SampleDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    def __init__(
        self,
        source: Source,
        task: str,
        *,
        augment: str | bool = "none",
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        base_size: int | None = None,
        scoring: bool = False,
        crop: TrainCrop | None = None,
        crop_pct: float = 1.0,
        normalise: bool = True,
    ) -> None:
        """``base_size``: None when ``source`` yields the final size, else the
        shorter side images are brought to with their ratio kept. ``scoring``: the
        items are scored, not trained on (a segmentation mask keeps its size).
        ``crop``: segmentation training's ``--crop`` and ``--cat-max-ratio``;
        ``crop_pct``: a classifier's centre crop (``--crop-pct``); ``normalise``
        False: images come out as decoded (see ``on_device``)."""
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
        self.base_size = base_size
        self.scoring = scoring
        self.crop = crop
        self.crop_pct = crop_pct
        self.normalise = normalise
        # By the size the augmentation sees, as a random crop needs it.
        self._transforms: dict[tuple[int, int], v2.Compose] = {}

    def __len__(self) -> int:
        return len(self.source)

    def transform(self, size: tuple[int, int]) -> v2.Compose:
        if self.base_size is not None:
            size = self.crop.size if self.crop else (self.base_size, self.base_size)
        if size not in self._transforms:
            geometry = None
            if self.base_size is not None:
                geometry = keep_ratio_geometry(
                    self.task,
                    self.base_size,
                    self.augment,
                    self.scoring,
                    self.crop,
                    self.mean,
                    self.crop_pct,
                )
            self._transforms[size] = build_transform(
                augment=self.augment,
                mean=self.mean,
                std=self.std,
                size=size,
                geometry=geometry,
                normalise=self.normalise,
            )
        return self._transforms[size]

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``key``: an index, or ``(index, seed)`` from a training sampler: the
        sample's augmentation then draws from ``seed`` alone, the same in the
        training process and in any loader worker."""
        if isinstance(key, int):
            return self.item(key)
        index, seed = key
        # The CPU generator alone, which the transforms draw from: torch.manual_seed
        # would also queue every device's seed, costing a millisecond a sample.
        rng = torch.default_generator
        state = rng.get_state()
        rng.manual_seed(seed)
        try:
            return self.item(index)
        finally:
            rng.set_state(state)

    def item(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = tv_tensors.Image(self.source.image(index))
        target = self.source.target(index)
        transform = self.transform((image.shape[-2], image.shape[-1]))
        if self.task == "segmentation" and self.scoring and self.base_size is not None:
            # Scored at the mask's own size: only the image is brought to the model's.
            return transform(image).as_subclass(torch.Tensor), target
        if self.task == "segmentation":
            image, mask = transform(image, tv_tensors.Mask(target))
            # Plain tensors out: tv_tensor subclasses surprise code downstream.
            return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)
        return transform(image).as_subclass(torch.Tensor), target

    def sizes(self) -> list[tuple[int, int]] | None:
        """Each item's (height, width) as scored, when items keep their own size (a
        loader must then batch equal sizes together); else None."""
        sizes = getattr(self.source, "sizes", None)
        if not (self.scoring and self.base_size and self.task == "segmentation"):
            return None
        return list(sizes) if sizes is not None else None

    @property
    def deterministic(self) -> bool:
        if parse(self.augment):
            return False
        # A random crop of a non-square image is random; of a square one it is all of it.
        sizes = getattr(self.source, "sizes", None) or []
        crops = self.base_size is not None and self.task == "segmentation"
        if crops and self.crop is not None:
            return False  # a random rescale
        return not crops or all(h == w for h, w in sizes)

    def on_device(self) -> tuple[SampleDataset, Normalise]:
        """This dataset with its images left as decoded (uint8 for 8-bit pixels,
        float32 in [0, 1] for deeper ones, or after ``--crop``'s mean padding),
        and the ``Normalise`` that finishes a batch of them on the device: a
        quarter of float32's host-to-device traffic, and less work per sample
        in the loader's workers (timm's ``PrefetchLoader`` does the same)."""
        deferred = copy.copy(self)
        deferred.normalise, deferred._transforms = False, {}
        return deferred, Normalise(self.mean, self.std)

    def with_transforms(
        self,
        *,
        augment: str | bool,
        mean: Sequence[float],
        std: Sequence[float],
        scoring: bool = False,
        crop_pct: float | None = None,
    ) -> SampleDataset:
        return SampleDataset(
            self.source,
            self.task,
            augment=augment,
            mean=mean,
            std=std,
            base_size=self.base_size,
            scoring=scoring,
            crop=self.crop,
            crop_pct=self.crop_pct if crop_pct is None else crop_pct,
        )


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
    """Per-class pixel (segmentation, 255 ignored) or sample counts of a dataset:
    the source's own ``label_counts(num_classes)`` where it has one (a folder's,
    from its index: no file read), else from every target."""
    n = len(dataset)  # type: ignore[arg-type]
    targets: Iterable[torch.Tensor]
    known = getattr(getattr(dataset, "source", None), "label_counts", None)
    if isinstance(dataset, SampleDataset) and callable(known):
        return list(known(num_classes))
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
        check_label_range(int(labels.min()), int(labels.max()), num_classes)
        counts += torch.bincount(labels, minlength=num_classes)
    return counts.tolist()


def check_label_range(low: int, high: int, num_classes: int) -> None:
    """Refuse training labels outside 0..num_classes-1 (255 already left out)."""
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise UsageError(
            f"training label {bad} is out of range for {num_classes} classes "
            f"(expected 0..{num_classes - 1})"
        )
