"""What a model family registers: one record per spec prefix (``tv``, ``timm``,
``smp``), as fastai's ``model_meta`` is one record per architecture.

A family builds randomly initialised models and, optionally, knows its
library's pretrained weights: where they are cached, how they are named, and
the preprocessing (mean, std, input size) they were trained with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ftkit.data.imagenet import IMAGENET_MEAN, IMAGENET_STD
from ftkit.errors import unknown


@dataclass(frozen=True)
class Preprocessing:
    """How images must look to the weights: normalisation and, where the
    weights define one, their input size (classification only)."""

    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    input_size: int | None = None
    source: str = "ImageNet statistics"
    # the share of the resized image a classifier's evaluation keeps (timm's crop_pct)
    crop_pct: float | None = None


@dataclass(frozen=True)
class NamedWeights:
    """A family's pretrained weights resolved from a name such as ``imagenet``."""

    state: dict[str, Any]  # the library's state dict, as its own loader returned it
    source: str  # e.g. "torchvision MobileNet_V2_Weights.IMAGENET1K_V1 (/cache/file.pth)"


@dataclass(frozen=True)
class ModelFamily:
    """``--model NAME:REST`` builds ``build(rest, num_classes=, task=)``.

    ``named_weights(rest, name)`` resolves ``--weights NAME`` (``imagenet``, a
    torchvision enum member, a timm tag) through the library's own cache and
    raises ``UsageError`` naming the file and folder when it is absent
    offline. ``preprocessing(rest, name)`` gives the weights' normalisation;
    ``name`` is None for a weights file, whose statistics are the family's
    default ImageNet ones. ``convert(state, model)`` is the library's own key
    converter for foreign checkpoints (timm's ``checkpoint_filter_fn``).
    ``split(model)`` gives the model as trunk then head
    (``ftkit.models.split.Split``), or None, so that a stage training only the
    head can train it on the trunk's cached outputs (``--cache-features``).
    """

    name: str
    build: Callable[..., Any]
    named_weights: Callable[[str, str], NamedWeights] | None = None
    preprocessing: Callable[[str, str | None], Preprocessing] | None = None
    convert: Callable[[dict[str, Any], Any], dict[str, Any]] | None = None
    split: Callable[[Any], Any] | None = None


def pick(kind: str, name: str, known: list[str]) -> str:
    if name not in known:
        raise unknown(kind, name, known)
    return name
