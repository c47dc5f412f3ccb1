"""Models from specs (``smp:unet:resnet18``, ``tv:resnet18``,
``timm:vit_tiny_patch16_224``) and their anatomies.

Each family is a built-in plugin registering a model builder and an anatomy
provider. Nothing is downloaded: weights start random unless a local file is
given (``--weights``, ``--from``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ftkit.data import IMAGENET_MEAN, IMAGENET_STD
from ftkit.errors import UsageError, unknown

if TYPE_CHECKING:
    from torch import nn

    from ftkit.plugins.manager import Plugins


def build_model(spec: str, *, num_classes: int, task: str, plugins: Plugins) -> nn.Module:
    prefix, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise UsageError(
            f"model spec '{spec}' must look like PREFIX:NAME, e.g. "
            f"smp:unet:resnet18, tv:resnet18, timm:vit_tiny_patch16_224; "
            f"prefixes: {', '.join(plugins.models.names())}"
        )
    if prefix not in plugins.models:
        raise unknown("model family", prefix, plugins.models.names())
    return plugins.models.get(prefix)(rest, num_classes=num_classes, task=task)


def normalization(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and std the model's pretrained weights expect (ImageNet's
    unless the model says otherwise, as timm models do)."""
    cfg: Any = getattr(model, "pretrained_cfg", None) or {}
    mean, std = cfg.get("mean"), cfg.get("std")
    if mean and std and len(mean) == 3:
        return tuple(mean), tuple(std)
    return IMAGENET_MEAN, IMAGENET_STD


def pick(kind: str, name: str, known: list[str]) -> str:
    if name not in known:
        raise unknown(kind, name, known)
    return name
