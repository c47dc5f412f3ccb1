"""The plan as data: stages of parameter groups with absolute LRs.

One vocabulary from strategy to optimizer: a strategy returns ``Stage(name,
epochs, groups)`` of ``ParamGroup(name, params, lr)``; ``make_plan``
(``build.py``) fills in what every plan shares (weight decay and its split,
BatchNorm mode, schedule, loss, the frozen list) with ``replace``; the
engine hands each group to the optimizer under the same ``name`` (and its
``label``). Fields after the first three are keyword-only.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import Any


@dataclass(frozen=True)
class ParamGroup:
    name: str  # the strategy's group (an anatomy layer, or several)
    params: tuple[str, ...]
    lr: float  # absolute: every multiplier already applied
    _: KW_ONLY
    weight_decay: float = 0.0
    num_params: int = 0
    bn_mode: str = "train"
    no_decay: bool = False  # the group's biases and norms: same LR, no weight decay
    l2sp: float = 0.0  # the pull towards the starting weights (instead of weight decay)
    new: bool = False  # with l2sp: the group's weights that did not come from the start

    @property
    def label(self) -> str:
        """How plan.json, the table and the optimizer name each part of a group."""
        return self.name + ("/no_decay" if self.no_decay else "/new" if self.new else "")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.label,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "params": list(self.params),
            "num_params": self.num_params,
            "bn_mode": self.bn_mode,
            "l2sp": self.l2sp,
        }


@dataclass(frozen=True)
class Stage:
    name: str
    epochs: int
    groups: tuple[ParamGroup, ...]
    _: KW_ONLY
    loss: str = ""
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    frozen: tuple[str, ...] = ()
    bn_mode: str = "eval"  # BatchNorm in the frozen layers; BatchNorm in trained groups trains

    @property
    def trainable(self) -> tuple[str, ...]:
        return tuple(p for g in self.groups for p in g.params)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "epochs": self.epochs,
            "loss": self.loss,
            "schedule": self.schedule,
            "warmup_epochs": self.warmup_epochs,
            "groups": [g.to_json() for g in self.groups],
            "frozen": list(self.frozen),
            "bn_mode": self.bn_mode,
        }


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
        return {
            "strategy": self.strategy,
            "stages": [s.to_json() for s in self.stages],
            "warnings": list(self.warnings),
        }


def steps_per_epoch(
    train_size: int, batch_size: int, accumulate: int = 1, world_size: int = 1
) -> int:
    """Optimizer steps in an epoch: the schedule's clock, the same for ``ftkit
    run`` and ``plan --plot``. Each of ``world_size`` ranks takes an equal share
    of the shuffled split, in whole batches of ``batch_size``; ``accumulate``
    batches make one step, and an epoch's trailing partial ones are dropped."""
    return train_size // world_size // batch_size // accumulate
