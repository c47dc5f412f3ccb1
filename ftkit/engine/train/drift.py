"""How far a fine-tune moved the weights from where it started.

The relative change ``||w - w0|| / ||w0||`` of a group is taken over all its
tensors together; a frozen group's is exactly 0, since its tensors are
bit-identical to the start. BatchNorm's running statistics drift too, even
where no weight trains (``bn_mode=train``): their change is reported apart,
a running mean's in units of the start's standard deviation
(``||mu - mu0|| / ||sqrt(var0)||``), since means near 0 would make any
relative change huge.
Every epoch's record carries the per-group figure (``weight_change``), and
``ftkit diff`` reports it per group and per tensor.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch

RUNNING_STATS = ("running_mean", "running_var")


def relative_change(
    start: Mapping[str, torch.Tensor], now: Mapping[str, torch.Tensor], names: Iterable[str]
) -> float:
    """``||w - w0|| / ||w0||`` over the tensors ``names``: 0.0 when nothing moved,
    NaN when the start is all zeros and something moved."""
    moved = base = 0.0
    for name in names:
        w0, w = start[name], now[name].detach().to(start[name].device)
        moved += float((w - w0).pow(2).sum(dtype=torch.float64))
        base += float(w0.pow(2).sum(dtype=torch.float64))
    if moved == 0.0:
        return 0.0
    return math.sqrt(moved / base) if base > 0 else math.nan


def group_changes(
    start: Mapping[str, torch.Tensor],
    now: Mapping[str, torch.Tensor],
    groups: Mapping[str, Iterable[str]],
) -> dict[str, float]:
    return {name: relative_change(start, now, params) for name, params in groups.items()}


def running_stats(state: Mapping[str, torch.Tensor]) -> list[str]:
    return sorted(k for k in state if k.rsplit(".", 1)[-1] in RUNNING_STATS)


def stat_change(
    start: Mapping[str, torch.Tensor], now: Mapping[str, torch.Tensor], name: str
) -> float:
    """A running variance's relative change; a running mean's against the start's
    standard deviation (its own variance's, when the state has one)."""
    var = name.removesuffix("running_mean") + "running_var"
    if not name.endswith("running_mean") or var not in start:
        return relative_change(start, now, [name])
    moved = (now[name].detach().to(start[name].device) - start[name]).double()
    scale = float(start[var].double().clamp_min(0).sum())
    if float(moved.pow(2).sum()) == 0.0:
        return 0.0
    return math.sqrt(float(moved.pow(2).sum()) / scale) if scale > 0 else math.nan
