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
        self.decay = decay
        self.params = {name for name, _ in model.named_parameters()}
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}
        device = next(iter(self.shadow.values())).device if self.shadow else None
        if device is not None and device.type == "mps":
            device = torch.device("cpu")  # MPS has no float64
        self.updates = torch.zeros((), dtype=torch.float64, device=device)  # on the device

    @torch.no_grad()
    def update(self, model: nn.Module, taken: torch.Tensor | None = None) -> None:
        """After a step; one not ``taken`` (a device bool: skipped) changes nothing,
        decided on the device."""
        on = torch.ones_like(self.updates) if taken is None else taken.to(self.updates).double()
        self.updates += on
        u = self.updates
        d = torch.clamp((1 + u) / (10 + u), max=self.decay)  # in float64, as on the host
        weight = ((1 - d) * on).float()
        for name, value in model.state_dict().items():
            shadow = self.shadow[name]
            if name in self.params and value.is_floating_point():
                # d * shadow + (1 - d) * value, exact where they are equal (a frozen
                # weight stays bit-identical), at d = 0 (the model's) and at weight 0
                shadow.lerp_(value, weight.to(value.device, value.dtype))
            else:  # BatchNorm statistics follow the model
                shadow.copy_(value if taken is None else torch.where(taken, value, shadow))

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
        return {"updates": int(self.updates), "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates.fill_(state["updates"])
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)
