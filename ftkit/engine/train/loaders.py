"""The loaders of a run (and of ``ftkit lr-find``): the training sampler and
loader, and the validation loader in batches of one image size."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader

from ftkit.config import Config
from ftkit.engine.train.distributed import EpochSampler, ShardSampler, World, scoring_batches


def loaders(
    config: Config, data: Any, world: World, device: torch.device
) -> tuple[EpochSampler, DataLoader, DataLoader]:
    """The training sampler and loader (this rank's share of a (seed, epoch)
    shuffle), and the validation loader (this rank's share, in order)."""
    sampler = EpochSampler(len(data.train), config.seed, world)
    # The loader draws worker seeds from its own generator: an iterator made
    # mid-epoch on resume must not consume the global RNG that augmentation uses.
    train_loader = DataLoader(
        data.train,
        batch_size=config.batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=config.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=config.workers > 0,
        generator=torch.Generator().manual_seed(config.seed),
        collate_fn=data.collate,  # MixUp/CutMix, when asked for
    )
    val_loader = DataLoader(
        data.val,
        **scoring_batches(data.val, config.batch_size, ShardSampler(len(data.val), world)),
        num_workers=config.workers,
        pin_memory=device.type == "cuda",
    )
    return sampler, train_loader, val_loader
