"""LR lint: warn before training when a group's LR is far outside the band
known to work for its situation (seed 004's table; SGD about 100x higher,
seed 000).

"Far" means more than half a decade (a factor of sqrt(10)) beyond a band's
edge: LRs are judged on a log scale, and the bands are a decade wide.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from ftkit.anatomy import Anatomy
from ftkit.plan import Plan
from ftkit.report import fmt_lr

# AdamW-style optimizers; (low, high, what it is)
BANDS = {
    "scratch": (1e-4, 1e-3, "training from scratch"),
    "transfer": (1e-5, 1e-4, "transfer to another domain"),
    "same-domain": (1e-6, 1e-5, "fine-tuning in the same domain"),
    "loss-switch": (1e-7, 1e-6, "a loss switch on a converged model"),
}
SGD_FACTOR = 100.0
NEVER_TRAINS = 1e-8  # at or below this, Adam-style updates are lost in the noise
FAR = math.sqrt(10)


def band(situation: str, optimizer: str) -> tuple[float, float, str]:
    low, high, what = BANDS[situation]
    factor = SGD_FACTOR if optimizer == "sgd" else 1.0
    return low * factor, high * factor, what


def lint(plan: Plan, anatomy: Anatomy, situation: str, optimizer: str) -> Iterator[str]:
    low, high, what = band(situation, optimizer)
    floor = NEVER_TRAINS * (SGD_FACTOR if optimizer == "sgd" else 1.0)
    head_params = set(anatomy.params_of(anatomy.head))
    for stage in plan.stages:
        head_lrs: list[float] = []
        backbone_lrs: list[float] = []
        linted = set()
        for group in stage.groups:
            name = group.name.split("/")[0]  # one warning for a group and its no_decay half
            if name in linted:
                continue
            linted.add(name)
            where = f"stage '{stage.name}', group '{name}': LR {fmt_lr(group.lr)}"
            is_head = all(p in head_params for p in group.params)
            (head_lrs if is_head else backbone_lrs).append(group.lr)
            if group.lr <= floor * (1 + 1e-9):
                yield (
                    f"{where} is at or below {fmt_lr(floor)}: it will barely move the "
                    f"{'head' if is_head else 'backbone'} (it never trains)"
                )
            elif group.lr < low / FAR:
                yield (
                    f"{where} is far below the {fmt_lr(low)}..{fmt_lr(high)} band for {what}: "
                    f"it will barely move the {'head' if is_head else 'backbone'}"
                )
            elif group.lr > high * FAR:
                yield (
                    f"{where} is far above the {fmt_lr(low)}..{fmt_lr(high)} band for {what}: "
                    + (
                        "training may be unstable"
                        if is_head
                        else "it risks destroying pretrained features"
                    )
                )
        if head_lrs and backbone_lrs and max(head_lrs) < max(backbone_lrs):
            yield (
                f"stage '{stage.name}': the head trains slower ({fmt_lr(max(head_lrs))}) "
                f"than the backbone ({fmt_lr(max(backbone_lrs))}); a new head usually needs more"
            )
