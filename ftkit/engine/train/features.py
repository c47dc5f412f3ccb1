"""Cached features: when a stage trains only what comes after a frozen trunk
(linear probing, two-stage's head stage), compute the trunk's outputs once
and train the head on them.

This is exact only if the trunk gives the same output every epoch: no random
augmentation, and a frozen trunk in eval mode (BatchNorm statistics and
dropout fixed). ``--cache-features auto`` caches when that holds, ``on``
refuses to run when it does not, ``off`` never caches.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ftkit.errors import UsageError
from ftkit.models.split import Split
from ftkit.plan.stages import Stage


def why_not(
    split: Split | None, model: nn.Module, stage: Stage, deterministic: bool, distributed: bool
) -> str | None:
    """Why this stage cannot train on cached features, or None if it can."""
    if split is None:
        return f"ftkit does not know how to split {type(model).__name__} into trunk and head"
    if set(stage.trainable) & split.trunk_params:
        return f"stage '{stage.name}' trains part of the backbone"
    if stage.bn_mode == "train":
        return "bn_mode=train updates the frozen backbone's BatchNorm statistics"
    if not deterministic:
        return (
            "random augmentation or mixing makes cached features wrong; "
            "use --augment none without --mixup/--cutmix"
        )
    if distributed:
        return "it is not supported with torchrun yet"
    return None


def check_requested(
    split: Split | None,
    model: nn.Module,
    stages: tuple[Stage, ...],
    deterministic: bool,
    distributed: bool,
) -> None:
    """``--cache-features on``: refuse, before anything is written, a plan in
    which no stage can be cached."""
    reasons = [why_not(split, model, s, deterministic, distributed) for s in stages]
    if all(reasons):
        raise UsageError(f"--cache-features on: cannot cache: {reasons[0]}")


class CachedFeatures(Dataset[tuple[Any, torch.Tensor]]):
    """The trunk's outputs for every training sample, by sample index."""

    def __init__(self, split: Split, dataset: Any, batch_size: int, device: torch.device) -> None:
        was_training = split.trunk.training
        split.trunk.eval()
        self.features: list[Any] = []
        self.targets: list[torch.Tensor] = []
        with torch.no_grad():
            for x, y in DataLoader(dataset, batch_size=batch_size):
                out = split.trunk_forward(x.to(device))
                for i in range(len(y)):
                    self.features.append(_index(out, i))
                    self.targets.append(y[i])
        split.trunk.train(was_training)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Any, torch.Tensor]:
        index = key if isinstance(key, int) else key[0]  # a training sampler's (index, seed)
        return self.features[index], self.targets[index]


def _index(out: Any, i: int) -> Any:
    if isinstance(out, (list, tuple)):
        return [t[i] for t in out]
    return out[i]
