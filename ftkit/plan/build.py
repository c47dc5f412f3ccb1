"""``make_plan``: a strategy run on an anatomy, plus what every plan shares:
the weight-decay split, BatchNorm mode, schedule, loss, the frozen list and
the LR lint. ``ftkit plan`` prints it; the engine executes exactly it.
"""

from __future__ import annotations

import math
from dataclasses import replace

from ftkit.errors import UsageError
from ftkit.plan.anatomy import Anatomy
from ftkit.plan.lint import lint
from ftkit.plan.stages import ParamGroup, Plan
from ftkit.plan.strategy import PlanRequest, Strategy


def make_plan(
    strategy: Strategy,
    anatomy: Anatomy,
    request: PlanRequest,
    *,
    loss: str,
    warnings: tuple[str, ...] = (),
) -> Plan:
    opts = request.options
    if opts.get("regroup"):
        anatomy = anatomy.regroup(opts["regroup"])
    # L2-SP pulls what came from the weights (all of a --from baseline; a new head did not)
    head = set(anatomy.params_of(anatomy.head)) if request.new_head else set()
    loaded = request.pretrained or request.from_checkpoint
    anchored = frozenset(p for p in anatomy.sizes if loaded and p not in head)
    if opts.get("l2sp") and not anchored:
        warnings += ("-o l2sp has no effect: no weights come from --weights or --from",)
    stages = []
    for spec in strategy.build(anatomy, request):
        if spec.epochs < 1:
            raise UsageError(
                f"strategy '{strategy.name}': stage '{spec.name}' has "
                f"{spec.epochs} epochs; raise --epochs"
            )
        seen: set[str] = set()
        groups: list[ParamGroup] = []
        for g in spec.groups:
            if not (math.isfinite(g.lr) and g.lr > 0):
                raise UsageError(
                    f"strategy '{strategy.name}': group '{g.name}' in stage "
                    f"'{spec.name}' has LR {g.lr:g}; LRs must be finite and > 0"
                )
            if seen.intersection(g.params):
                raise UsageError(
                    f"strategy '{strategy.name}': a parameter of group '{g.name}' "
                    f"is in two groups of stage '{spec.name}'"
                )
            seen.update(g.params)
            # BatchNorm in a trained group trains, unless every BatchNorm is kept frozen
            bn = "eval" if opts["bn_mode"] == "frozen" else "train"
            groups += _split_decay(
                g, opts["weight_decay"], anatomy, bn, l2sp=opts.get("l2sp", 0.0), anchored=anchored
            )
        frozen = tuple(p for p in anatomy.sizes if p not in seen)
        stages.append(
            replace(
                spec,
                groups=tuple(groups),
                loss=loss,
                schedule=opts["schedule"],
                warmup_epochs=opts["warmup_epochs"],
                frozen=frozen,
                bn_mode=opts["bn_mode"],
            )
        )
    plan = Plan(strategy.name, tuple(stages))
    situation = strategy.lint_situation or _situation(request)
    return Plan(
        plan.strategy,
        plan.stages,
        warnings
        + tuple(lint(plan, anatomy, situation, request.optimizer, new_head=request.new_head)),
        anchored if opts.get("l2sp") else frozenset(),
    )


def _split_decay(
    group: ParamGroup,
    weight_decay: float,
    anatomy: Anatomy,
    bn_mode: str,
    l2sp: float = 0.0,
    anchored: frozenset[str] = frozenset(),
) -> list[ParamGroup]:
    """One group becomes up to three, all at its LR: its weights (decayed, or
    with ``l2sp`` pulled towards their start instead), the weights that did not
    come from the start (``new``, decayed), and the rest (biases, norms),
    never decayed, with ``l2sp`` pulled too where they came from the start."""
    weights = tuple(p for p in group.params if p not in anatomy.no_decay)
    pulled = tuple(p for p in weights if l2sp and p in anchored)
    decayed = tuple(p for p in weights if p not in pulled)
    rest = tuple(p for p in group.params if p in anatomy.no_decay)
    rest_pull = l2sp if anchored.intersection(rest) else 0.0
    halves = [
        (pulled, 0.0, l2sp, False, False),
        (decayed, weight_decay, 0.0, False, bool(pulled)),
        (rest, 0.0, rest_pull, True, False),
    ]
    return [
        replace(
            group,
            params=members,
            weight_decay=wd,
            num_params=sum(anatomy.sizes[p] for p in members),
            bn_mode=bn_mode,
            no_decay=no_decay,
            l2sp=pull,
            new=new,
        )
        for members, wd, pull, no_decay, new in halves
        if members
    ]


def _situation(request: PlanRequest) -> str:
    if request.from_checkpoint:
        return "loss-switch" if request.new_loss else "same-domain"
    return "transfer" if request.pretrained else "scratch"
