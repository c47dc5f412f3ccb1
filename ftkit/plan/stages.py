"""The plan: stages of parameter groups with absolute LRs. Plan is data.

``make_plan`` runs a strategy on an anatomy and adds what every plan shares:
the weight-decay split, BatchNorm mode, schedule, loss, the frozen list and
the LR lint. ``ftkit plan`` prints it; the engine executes exactly it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ftkit.errors import UsageError
from ftkit.plan.anatomy import Anatomy
from ftkit.plan.strategy import PlanRequest, Strategy


@dataclass(frozen=True)
class ParamGroup:
    name: str  # the strategy's group (an anatomy layer, or several)
    lr: float
    weight_decay: float
    params: tuple[str, ...]
    num_params: int
    bn_mode: str
    no_decay: bool = False  # the group's biases and norms: same LR, no weight decay
    l2sp: float = 0.0  # the pull towards the starting weights (instead of weight decay)
    new: bool = False  # with l2sp: the group's weights that did not come from the start

    @property
    def label(self) -> str:
        """How plan.json, the table and the optimizer name it."""
        return self.name + ("/no_decay" if self.no_decay else "/new" if self.new else "")


@dataclass(frozen=True)
class Stage:
    name: str
    epochs: int
    loss: str
    schedule: str
    warmup_epochs: float
    groups: tuple[ParamGroup, ...]
    frozen: tuple[str, ...]
    bn_mode: str  # BatchNorm in the frozen layers; BatchNorm in trained groups trains

    @property
    def trainable(self) -> tuple[str, ...]:
        return tuple(p for g in self.groups for p in g.params)


@dataclass(frozen=True)
class Plan:
    strategy: str
    stages: tuple[Stage, ...]
    warnings: tuple[str, ...] = ()
    anchored: frozenset[str] = frozenset()  # with l2sp: what came from the weights

    @property
    def epochs(self) -> int:
        return sum(s.epochs for s in self.stages)

    def stage_at(self, epoch: int) -> int:
        """Index of the stage that runs (1-based) ``epoch``."""
        end = 0
        for index, stage in enumerate(self.stages):
            end += stage.epochs
            if epoch <= end:
                return index
        return len(self.stages) - 1

    def to_json(self) -> dict[str, Any]:
        stages = []
        for stage in self.stages:
            data = asdict(stage)
            data["groups"] = [
                {**asdict(g), "name": g.label, "params": list(g.params)} for g in stage.groups
            ]
            for group in data["groups"]:
                del group["no_decay"], group["new"]  # the label says it
            data["frozen"] = list(stage.frozen)
            stages.append(data)
        return {"strategy": self.strategy, "stages": stages, "warnings": list(self.warnings)}


def steps_per_epoch(
    train_size: int, batch_size: int, accumulate: int = 1, world_size: int = 1
) -> int:
    """Optimizer steps in an epoch: the schedule's clock, the same for ``ftkit
    run`` and ``plan --plot``. Each of ``world_size`` ranks takes an equal share
    of the shuffled split, in whole batches of ``batch_size``; ``accumulate``
    batches make one step, and an epoch's trailing partial ones are dropped."""
    return train_size // world_size // batch_size // accumulate


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
                g.name, g.params, g.lr, opts["weight_decay"], anatomy, bn,
                l2sp=opts.get("l2sp", 0.0), anchored=anchored,
            )  # fmt: skip
        frozen = tuple(p for p in anatomy.sizes if p not in seen)
        stages.append(
            Stage(
                spec.name,
                spec.epochs,
                loss,
                opts["schedule"],
                opts["warmup_epochs"],
                tuple(groups),
                frozen,
                opts["bn_mode"],
            )
        )
    plan = Plan(strategy.name, tuple(stages))
    from ftkit.plan.lint import lint

    situation = strategy.lint_situation or _situation(request)
    return Plan(
        plan.strategy,
        plan.stages,
        warnings
        + tuple(lint(plan, anatomy, situation, request.optimizer, new_head=request.new_head)),
        anchored if opts.get("l2sp") else frozenset(),
    )


def _split_decay(
    name: str,
    params: tuple[str, ...],
    lr: float,
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
    weights = tuple(p for p in params if p not in anatomy.no_decay)
    pulled = tuple(p for p in weights if l2sp and p in anchored)
    decayed = tuple(p for p in weights if p not in pulled)
    rest = tuple(p for p in params if p in anatomy.no_decay)
    rest_pull = l2sp if anchored.intersection(rest) else 0.0
    halves = [
        (pulled, 0.0, l2sp, False, False),
        (decayed, weight_decay, 0.0, False, bool(pulled)),
        (rest, 0.0, rest_pull, True, False),
    ]
    return [
        ParamGroup(
            name,
            lr,
            wd,
            members,
            sum(anatomy.sizes[p] for p in members),
            bn_mode,
            no_decay,
            pull,
            new,
        )  # fmt: skip
        for members, wd, pull, no_decay, new in halves
        if members
    ]


def _situation(request: PlanRequest) -> str:
    if request.from_checkpoint:
        return "loss-switch" if request.new_loss else "same-domain"
    return "transfer" if request.pretrained else "scratch"
