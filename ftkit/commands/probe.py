"""How close a data set is to what the weights were pretrained on, measured
cheaply: a linear probe on the frozen network's features, against the same
probe on the features of the same network with random weights.

Random convolutional features already separate many data sets a little, so
the pretrained probe's score alone says little; what the pretraining adds is
the share of the random features' error that the pretrained features remove.
A random network's BatchNorm layers get the statistics of the training
images first (with the default ones, activations vanish within a few blocks
and every image gives the same features). Both probes see the same images:
at most ``MAX_SAMPLES`` of each split, with no augmentation, pooled over
space (the trunk a model family's ``split`` names; for a U-Net, its
encoder's deepest map). A segmentation image's label is the class that
covers most of it besides the most common class of the training pixels (the
background, in practice).

The probe is a multinomial logistic regression on standardised features, its
classes weighted by inverse frequency, fitted by L-BFGS with an L2 penalty
(with more features than images it would otherwise separate the training set
at any weight scale), and scored by balanced accuracy on the validation
split: the mean recall over the classes present there, so that a majority
class cannot carry it. Random features on a few hundred images can score
below chance; the baseline is then chance.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

from ftkit.config import Config
from ftkit.errors import UsageError
from ftkit.plugins.manager import Plugins
from ftkit.prepare import Prepared, model_data, prepare
from ftkit.resolve import build_model, loader_settings, model_family, pick_device

MAX_SAMPLES = 1000  # per split: seconds on a CPU, and plenty for a linear probe's score
L2 = 1e-2


@dataclass(frozen=True)
class ProbeScores:
    pretrained: float  # balanced accuracy of the probe on the pretrained features
    random: float  # ... on the same network's features with random weights
    chance: float  # 1 / the number of classes in the validation labels
    train_samples: int
    val_samples: int

    @property
    def error_removed(self) -> float:
        """The share of the baseline's error (random features, or chance if
        that is higher) that the pretrained features remove."""
        baseline = max(self.random, self.chance)
        return (self.pretrained - baseline) / (1 - baseline) if baseline < 1 else 0.0


def pooled(out: Any) -> torch.Tensor:
    """A trunk's output as one vector per sample."""
    if isinstance(out, (list, tuple)):  # an encoder's feature maps: the deepest
        out = out[-1]
    if out.dim() == 4:
        return out.mean(dim=(2, 3))
    if out.dim() == 3:  # tokens
        return out.mean(dim=1)
    return out


def image_label(target: torch.Tensor, common: int, ignore_index: int) -> int:
    """A class id per image: itself for classification; for a mask, the class
    covering most of it besides ``common`` (or ``common`` when nothing else)."""
    if target.dim() == 0:
        return int(target)
    values = target[(target != ignore_index) & (target != common)]
    return int(values.long().bincount().argmax()) if values.numel() else common


def features(
    split: Any, batches: Any, device: torch.device, common: int, ignore: int
) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    split.trunk.eval()
    with torch.inference_mode():
        for x, y in batches:
            xs.append(pooled(split.trunk_forward(x.to(device))).float().cpu())
            ys += [image_label(t, common, ignore) for t in y]
    return torch.cat(xs), torch.tensor(ys)


def measure_batchnorm(split: Any, batches: Any, device: torch.device) -> None:
    """Every BatchNorm's running statistics: the average over ``batches``."""
    norms = [
        m for m in split.trunk.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
    ]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average
    split.trunk.train()
    with torch.no_grad():
        for x, _ in batches:
            split.trunk_forward(x.to(device))
    split.trunk.eval()


def balanced_accuracy(predicted: torch.Tensor, truth: torch.Tensor) -> float:
    recalls = [float((predicted[truth == c] == c).float().mean()) for c in truth.unique()]
    return sum(recalls) / len(recalls)


def fit_probe(
    train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor], classes: int
) -> float:
    """Balanced validation accuracy of a logistic regression fitted on ``train``."""
    (x, y), (vx, vy) = train, val
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    x, vx = (x - mean) / std, (vx - mean) / std
    counts = torch.bincount(y, minlength=classes).float()
    weight = counts.sum() / (classes * counts.clamp(min=1))
    linear = torch.nn.Linear(x.shape[1], classes)
    torch.nn.init.zeros_(linear.weight), torch.nn.init.zeros_(linear.bias)
    optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(linear(x), y, weight=weight)
        loss = loss + L2 * linear.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        return balanced_accuracy(linear(vx).argmax(1), vy)


def sample(dataset: Any, seed: int) -> Any:
    if len(dataset) <= MAX_SAMPLES:
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    return Subset(dataset, order[:MAX_SAMPLES].tolist())


def probe(config: Config, plugins: Plugins) -> tuple[Prepared, ProbeScores]:
    """The data and model of ``config`` (with its pretrained weights), and the
    probe's scores on pretrained and random features."""
    config = replace(config, augment="none", mixup=None, cutmix=None)
    prepared = prepare(config, plugins)
    config = prepared.config
    family = model_family(config.model_spec, plugins)[0]
    device = pick_device(config.device)
    data = model_data(prepared)
    counts = data.label_counts()
    common = max(range(len(counts)), key=counts.__getitem__)
    task = plugins.tasks.get(config.task)
    torch.manual_seed(config.seed)  # the random network is the same on every call
    random_model = build_model(
        config.model_spec, num_classes=prepared.num_classes, task=task.targets, plugins=plugins
    )
    scores = []
    train, val = (
        DataLoader(
            sample(part, config.seed),
            config.batch_size,
            num_workers=loader_settings(config, device.type).workers,
        )
        for part in (data.train, data.val)
    )
    for model in (prepared.model, random_model):
        split = family.split(model.to(device)) if family.split else None
        if split is None:
            raise UsageError(
                f"advise cannot take features from {config.model_spec}: ftkit does not know "
                f"how to split {type(model).__name__} into trunk and head"
            )
        if model is random_model:
            measure_batchnorm(split, train, device)
        train_set = features(split, train, device, common, task.ignore_index)
        val_set = features(split, val, device, common, task.ignore_index)
        scores.append(fit_probe(train_set, val_set, prepared.num_classes))
    chance = 1 / len(val_set[1].unique())
    return prepared, ProbeScores(scores[0], scores[1], chance, len(train_set[1]), len(val_set[1]))
