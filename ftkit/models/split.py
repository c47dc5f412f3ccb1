"""A model as a trunk and a head: what a model family's ``split`` returns, so
that a stage that trains only the head can train on the trunk's cached
outputs (``engine/train/features.py``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Split:
    """A model as trunk then head; a model family's ``split`` says how."""

    trunk: nn.Module
    trunk_forward: Callable[[torch.Tensor], Any]
    head: Callable[[Any], torch.Tensor]
    trunk_params: frozenset[str]


def params_under(model: nn.Module, prefix: str) -> frozenset[str]:
    return frozenset(n for n, _ in model.named_parameters() if n.startswith(prefix + "."))


def params_outside(model: nn.Module, prefix: str) -> frozenset[str]:
    return frozenset(n for n, _ in model.named_parameters() if not n.startswith(prefix + "."))
