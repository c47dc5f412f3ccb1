"""``--ema DECAY``: an exponential moving average of the weights, updated
after every optimizer step, with timm's warm-up of the decay
(``min(decay, (1 + n) / (10 + n))`` after n updates) so that the early,
random-ish weights fade fast. BatchNorm's running statistics are copied from
the model, not averaged. With EMA on, validation scores the average and
``best`` holds it; its state is part of ``last``, so a resume is exact."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


class Ema:
    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay, self.updates = decay, 0
        self.params = {name for name, _ in model.named_parameters()}
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for name, value in model.state_dict().items():
            if name in self.params and value.is_floating_point():
                # d * shadow + (1 - d) * value, exact where they are equal (a frozen
                # weight stays bit-identical) and at d = 0 (the model's)
                self.shadow[name].lerp_(value, 1 - d)
            else:
                self.shadow[name].copy_(value)  # BatchNorm statistics follow the model

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """The model holds the average inside the block, its own weights after."""
        own = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.shadow)
        try:
            yield
        finally:
            model.load_state_dict(own)

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = state["updates"]
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)
