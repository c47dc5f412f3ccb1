"""The optimizer across stages, and freezing.

One optimizer lives for the whole run. At a stage change its param groups are
rebuilt from the plan: parameters that keep training keep their state (state
is keyed by the tensor), newly unfrozen ones start fresh, and frozen ones lose
theirs. Frozen means ``requires_grad=False``: no gradient, no state, no decay.
"""

from __future__ import annotations

import torch
from torch import nn

from ftkit.errors import UsageError
from ftkit.optimizers import Optimizer
from ftkit.plan.stages import Stage


def make_optimizer(optimizer: Optimizer, model: nn.Module) -> torch.optim.Optimizer:
    """The registered ``optimizer``, built once for the run with no groups yet."""
    # Groups are filled by apply_stage; a placeholder keeps the constructor happy.
    placeholder = [{"params": [next(model.parameters())], "lr": 0.0, "weight_decay": 0.0}]
    try:
        built = optimizer.build(placeholder)
    except Exception as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise UsageError(f"optimizer '{optimizer.name}' cannot be built: {reason}") from exc
    if not isinstance(built, torch.optim.Optimizer):
        raise UsageError(
            f"optimizer '{optimizer.name}' built a {type(built).__name__}; "
            f"expected a torch.optim.Optimizer"
        )
    built.param_groups.clear()
    return built


def apply_stage(model: nn.Module, optimizer: torch.optim.Optimizer, stage: Stage) -> None:
    params = dict(model.named_parameters())
    trainable = set(stage.trainable)
    for name, param in params.items():
        param.requires_grad_(name in trainable)
        if name not in trainable:
            param.grad = None
            optimizer.state.pop(param, None)
    optimizer.param_groups.clear()
    for group in stage.groups:
        optimizer.add_param_group(
            {
                "params": [params[p] for p in group.params],
                "lr": group.lr,
                "initial_lr": group.lr,  # the schedule scales this, per group
                "weight_decay": group.weight_decay,
                "name": group.name,  # the plan's group, as in plan.json
                "label": group.label,  # the part of it: "/no_decay", "/new"
                "l2sp": group.l2sp,
            }
        )


def set_train_mode(model: nn.Module, stage: Stage) -> None:
    """Train mode, except BatchNorm whose running statistics the stage keeps:
    with 'eval' those of fully frozen layers, with 'frozen' all of them."""
    model.train()
    if stage.bn_mode == "train":
        return
    frozen = set(stage.frozen)
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            names = [f"{name}.{p}" if name else p for p, _ in module.named_parameters()]
            if stage.bn_mode == "frozen" or (names and all(n in frozen for n in names)):
                module.eval()


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * factor
