"""The optimizers ``--optimizer`` names: ``adamw`` and ``sgd`` registered
through ``ftkit_register_optimizers`` like any plugin's, and every optimizer
timm knows (``timm.optim.list_optimizers()``) as the registry's fallback.

Imported at CLI start-up: torch and timm are imported when an optimizer is built
(timm also when a name is not registered).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ftkit.hooks import hookimpl
from ftkit.registry import Fallback


@dataclass(frozen=True)
class Optimizer:
    """``--optimizer NAME`` calls ``build(param_groups)`` once per run.

    ``param_groups`` is a list of dicts (``params``, ``lr``, ``weight_decay``);
    ``build`` returns a ``torch.optim.Optimizer`` that keeps each group's own
    ``lr`` and ``weight_decay``. ftkit then replaces the groups with the plan's
    at every stage through ``add_param_group``, so any torch optimizer works.
    """

    name: str
    build: Callable[..., Any]
    description: str = ""


def adamw(param_groups: Sequence[dict[str, Any]], **kw: Any) -> Any:
    import torch

    return torch.optim.AdamW(param_groups, lr=0.0, fused=fusable(param_groups), **kw)


def sgd(param_groups: Sequence[dict[str, Any]], **kw: Any) -> Any:
    import torch

    return torch.optim.SGD(param_groups, lr=0.0, momentum=0.9, fused=fusable(param_groups), **kw)


def fusable(param_groups: Sequence[dict[str, Any]]) -> bool:
    """Whether torch's fused kernel can step these parameters (floating point, on
    the CPU or CUDA): it takes ``found_inf``, so a non-finite step is skipped on
    the device (``engine/train/loop.py``), and is one kernel for all of them."""
    return all(
        p.is_floating_point() and p.device.type in ("cpu", "cuda")
        for g in param_groups
        for p in g["params"]
    )


@hookimpl
def ftkit_register_optimizers(register: Callable[[Optimizer], None]) -> None:
    register(Optimizer("adamw", adamw, "torch AdamW (decoupled weight decay)"))
    register(Optimizer("sgd", sgd, "torch SGD, momentum 0.9"))


@dataclass(frozen=True)
class TimmBuild:
    """timm's ``create_optimizer_v2`` on ftkit's groups: given dicts, timm
    makes no groups of its own, so the plan's per-group LR and decay stand."""

    name: str

    def __call__(self, param_groups: Sequence[dict[str, Any]], **kw: Any) -> Any:
        from timm.optim import create_optimizer_v2

        return create_optimizer_v2(list(param_groups), opt=self.name, **kw)


@functools.cache
def timm_names() -> tuple[str, ...]:
    from timm.optim import list_optimizers

    return tuple(str(name) for name in list_optimizers())


def timm_optimizer(name: str) -> Optimizer | None:
    return Optimizer(name, TimmBuild(name), "timm") if name in timm_names() else None


TIMM = Fallback[Optimizer]("ftkit.optimizers", timm_optimizer, timm_names)
