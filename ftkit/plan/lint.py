"""LR lint: warn before training when a group's LR is far outside the band
known to work for its situation (seed 004's table for the backbone, seeds 000
and 003 for a new head; SGD about 100x higher, seed 000).

"Far" means more than half a decade (a factor of sqrt(10)) beyond a band's
edge: LRs are judged on a log scale, and the bands are a decade wide. A
backbone trained with several LRs (discriminative, LLRD) is judged as a whole:
it barely moves when even its fastest group is far below the band, and it is
at risk when its slowest group is far above, or its fastest one more than a
further decade above (the top layers are meant to move most: seed 000 trains
layer4 at 1e-3 beside layer1 at 1e-5).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace

from ftkit.plan.anatomy import Anatomy
from ftkit.plan.stages import ParamGroup, Plan, Stage
from ftkit.plan.units import fmt_lr

# AdamW-style optimizers; (low, high, what it is)
BANDS = {
    "scratch": (1e-4, 1e-3, "training from scratch"),
    "transfer": (1e-5, 1e-4, "transfer to another domain"),
    "same-domain": (1e-6, 1e-5, "fine-tuning in the same domain"),
    "loss-switch": (1e-7, 1e-6, "a loss switch on a converged model"),
    # Seed 003's linear probe trains a new head at 1e-3..1e-2; seed 000's at 1e-2,
    # and a full fine-tune at 1e-4 trains it too.
    "new-head": (1e-4, 1e-2, "a new head on pretrained features"),
}
SGD_FACTOR = 100.0
NEVER_TRAINS = 1e-8  # at or below this, Adam-style updates are lost in the noise
FAR = math.sqrt(10)
TOP_LAYERS_ALLOWANCE = 10.0


def band(situation: str, optimizer: str) -> tuple[float, float, str]:
    low, high, what = BANDS[situation]
    factor = SGD_FACTOR if optimizer == "sgd" else 1.0
    return low * factor, high * factor, what


def lint(
    plan: Plan, anatomy: Anatomy, situation: str, optimizer: str, *, new_head: bool = True
) -> Iterator[str]:
    """``situation`` is the backbone's (a key of ``BANDS``); a ``new_head`` on a
    pretrained backbone is judged on the band for a new head."""
    head_situation = "new-head" if new_head and situation != "scratch" else situation
    floor = NEVER_TRAINS * (SGD_FACTOR if optimizer == "sgd" else 1.0)
    head_params = set(anatomy.params_of(anatomy.head))
    for stage in plan.stages:
        groups = _whole_groups(stage)
        head = [g for g in groups if all(p in head_params for p in g.params)]
        backbone = [g for g in groups if g not in head]
        for g in groups:
            if g.lr <= floor * (1 + 1e-9):
                part = "head" if g in head else "backbone"
                yield (
                    f"{_where(stage, g)} is at or below {fmt_lr(floor)}: it will barely move "
                    f"the {part} (it never trains)"
                )
        live = [g for g in backbone if g.lr > floor * (1 + 1e-9)]
        if live:
            yield from _judge_backbone(stage, live, band(situation, optimizer), situation)
        for g in head:
            if g.lr > floor * (1 + 1e-9):
                yield from _judge_head(stage, g, band(head_situation, optimizer))
        if new_head and head and backbone and max(g.lr for g in head) < max(g.lr for g in backbone):
            yield (
                f"stage '{stage.name}': the head trains slower "
                f"({fmt_lr(max(g.lr for g in head))}) than the backbone "
                f"({fmt_lr(max(g.lr for g in backbone))}); a new head usually needs more"
            )
    if situation == "scratch" and _backbone_never_trains(plan, anatomy):
        yield (
            "the backbone is randomly initialised and frozen in every stage: the head can only "
            "learn from random features; start from pretrained weights (--weights imagenet "
            "or FILE) or train everything (--strategy full)"
        )


def _judge_backbone(
    stage: Stage, groups: list[ParamGroup], bounds: tuple[float, float, str], situation: str
) -> Iterator[str]:
    low, high, what = bounds
    slowest = min(groups, key=lambda g: g.lr)
    fastest = max(groups, key=lambda g: g.lr)
    if fastest.lr < low / FAR:
        yield (
            f"{_where(stage, fastest)} is far below the {fmt_lr(low)}..{fmt_lr(high)} band "
            f"for {what}: it will barely move the backbone"
        )
    elif slowest.lr > high * FAR or fastest.lr > high * FAR * TOP_LAYERS_ALLOWANCE:
        worst = slowest if slowest.lr > high * FAR else fastest
        harm = (
            "training may be unstable"
            if situation == "scratch"
            else "it risks destroying pretrained features"
        )
        yield (
            f"{_where(stage, worst)} is far above the {fmt_lr(low)}..{fmt_lr(high)} band "
            f"for {what}: {harm}"
        )


def _judge_head(stage: Stage, group: ParamGroup, bounds: tuple[float, float, str]) -> Iterator[str]:
    low, high, what = bounds
    if group.lr < low / FAR:
        yield (
            f"{_where(stage, group)} is far below the {fmt_lr(low)}..{fmt_lr(high)} band "
            f"for {what}: it will barely move the head"
        )
    elif group.lr > high * FAR:
        yield (
            f"{_where(stage, group)} is far above the {fmt_lr(low)}..{fmt_lr(high)} band "
            f"for {what}: training may be unstable"
        )


def _whole_groups(stage: Stage) -> list[ParamGroup]:
    """One entry per group: its no_decay half shares its name and LR."""
    seen: dict[str, ParamGroup] = {}
    for g in stage.groups:
        first = seen.get(g.name)
        seen[g.name] = (
            replace(g, no_decay=False)
            if first is None
            else replace(
                first, params=first.params + g.params, num_params=first.num_params + g.num_params
            )
        )
    return list(seen.values())


def _where(stage: Stage, group: ParamGroup) -> str:
    return f"stage '{stage.name}', group '{group.name}': LR {fmt_lr(group.lr)}"


def _backbone_never_trains(plan: Plan, anatomy: Anatomy) -> bool:
    backbone = set(anatomy.params_of(anatomy.backbone))
    return bool(backbone) and all(backbone.isdisjoint(s.trainable) for s in plan.stages)
