"""The loaders of a run (and of ``ftkit lr-find``): the training sampler and
loader, and the validation loader in batches of one image size.

Workers change speed, never results: a training sample's augmentation draws
from its own seed (``distributed.sample_seed``), MixUp and CutMix run in the
training process (``Loop.batch``), and the shuffle is the sampler's.

Images cross to the device as decoded (uint8 for 8-bit pixels) and are
converted and normalised there (``DeviceBatches``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader

from ftkit.config import Config
from ftkit.data.transforms import MixCollate, Normalise, SampleDataset
from ftkit.engine.train.distributed import EpochSampler, ShardSampler, World, scoring_batches
from ftkit.resolve import PREFETCH_FACTOR, loader_settings


def batch_mix(data: Any) -> Any:
    """MixUp/CutMix of the data's training batches, for ``Loop.mix``, or None."""
    return data.collate.mix if isinstance(data.collate, MixCollate) else None


class DeviceBatches:
    """A loader's (images, targets) batches on the device, the images finished
    there by ``finish`` (see ``SampleDataset.on_device``)."""

    def __init__(self, loader: DataLoader, finish: Normalise, device: torch.device) -> None:
        self.loader, self.finish, self.device = loader, finish, device

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.loader:
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            yield self.finish(x), y


Batches = DataLoader | DeviceBatches


def device_loader(dataset: Any, device: torch.device, **options: Any) -> Batches:
    """A DataLoader of ``dataset`` with ``options``; of an image dataset, its
    batches as decoded, finished on ``device``."""
    if not isinstance(dataset, SampleDataset):
        return DataLoader(dataset, **options)  # a plugin's data (text): as it comes
    deferred, finish = dataset.on_device()
    return DeviceBatches(DataLoader(deferred, **options), finish, device)


def loaders(
    config: Config, data: Any, world: World, device: torch.device
) -> tuple[EpochSampler, Batches, Batches]:
    """The training sampler and loader (this rank's share of a (seed, epoch)
    shuffle), and the validation loader (this rank's share, in order)."""
    settings = loader_settings(config, device.type, world.size)
    keyed = isinstance(data.train, SampleDataset)  # it seeds each sample from its key
    sampler = EpochSampler(len(data.train), config.seed, world, keyed=keyed)
    workers = settings.workers
    ahead: dict[str, Any] = (
        {"persistent_workers": True, "prefetch_factor": PREFETCH_FACTOR} if workers else {}
    )
    # The loader draws worker seeds from its own generator: an iterator made
    # mid-epoch on resume must not consume the global RNG.
    train_loader = device_loader(
        data.train,
        device,
        batch_size=config.batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=workers,
        pin_memory=settings.pin_memory,
        generator=torch.Generator().manual_seed(config.seed),
        # a dataset's own batching (a text task's padding) is kept; mixing is Loop.batch's
        collate_fn=None if batch_mix(data) else data.collate,
        **ahead,
    )
    val_loader = device_loader(
        data.val,
        device,
        **scoring_batches(data.val, config.batch_size, ShardSampler(len(data.val), world)),
        num_workers=workers,
        pin_memory=settings.pin_memory,
        **ahead,
    )
    return sampler, train_loader, val_loader
