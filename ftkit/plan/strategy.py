"""What a strategy is: a name, typed options, and a pure function from an
``Anatomy`` to stages (``Stage``) of parameter groups (``ParamGroup``) with
absolute learning rates.

A strategy never trains. ``ftkit plan`` prints what ``build`` returns and
``ftkit run`` executes it unchanged, so the plan is the single source of truth.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ftkit.plan.anatomy import Anatomy
from ftkit.plan.options import Option, non_negative
from ftkit.plan.stages import ParamGroup, Stage

SCHEDULES = ("constant", "linear", "cosine", "warmup-cosine", "one-cycle")


# The names of 0.1's plugin API: the same classes a plan holds.
GroupSpec = ParamGroup
StageSpec = Stage


@dataclass(frozen=True)
class PlanRequest:
    """What the user asked for, as a strategy sees it."""

    lr: float
    epochs: int
    options: dict[str, Any]
    from_checkpoint: bool = False
    new_loss: bool = False  # --loss given: with --from, that is a loss switch
    pretrained: bool = False  # --weights: the backbone starts from pretrained weights
    new_head: bool = True  # the head starts untrained (re-initialised, or no weights at all)
    optimizer: str = "adamw"


Build = Callable[[Anatomy, PlanRequest], Sequence[Stage]]

# Options every strategy accepts; a strategy may redeclare one to change its default.
COMMON_OPTIONS = (
    Option(
        "weight_decay",
        float,
        0.01,
        "decoupled weight decay for weights (never for "
        "biases, norms, tokens or position embeddings)",
        non_negative,
    ),
    Option(
        "bn_mode",
        str,
        "eval",
        "BatchNorm running statistics: 'eval' fixes them in frozen layers, 'train' updates "
        "them everywhere, 'frozen' fixes them everywhere (a converged model's)",
        choices=("eval", "train", "frozen"),
    ),
    Option(
        "schedule",
        str,
        "cosine",
        "LR schedule within each stage; scales each group's own LR",
        choices=SCHEDULES,
    ),
    Option("warmup_epochs", float, 1.0, "linear warmup length for 'warmup-cosine'", non_negative),
    Option(
        "l2sp",
        float,
        0.0,
        "L2-SP: pull the weights that came from --weights/--from towards those values, "
        "not towards zero (decoupled, scaled by the LR like weight decay); a new head "
        "keeps weight decay",
        non_negative,
    ),
    Option(
        "regroup",
        str,
        "",
        "regroup layers by name patterns, "
        "e.g. 'early=conv1|bn1|layer1;late=layer2|layer3|layer4;head=fc'",
    ),
)


@dataclass(frozen=True)
class Strategy:
    name: str
    description: str
    build: Build
    options: tuple[Option, ...] = ()
    default_loss: str | None = None
    default_class_weights: str | None = None
    requires_from: bool = False
    lint_situation: str | None = None  # force an LR band, e.g. "loss-switch"

    def all_options(self) -> tuple[Option, ...]:
        own = {o.name for o in self.options}
        return self.options + tuple(o for o in COMMON_OPTIONS if o.name not in own)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "options": [o.describe() for o in self.all_options()],
        }


def single_stage(name: str, epochs: int, *groups: ParamGroup) -> list[Stage]:
    """A strategy's whole plan in one stage."""
    return [Stage(name, epochs, tuple(groups))]


def group(name: str, params: Sequence[str], lr: float) -> ParamGroup:
    """A strategy's parameter group: ``params`` trained at the absolute ``lr``."""
    return ParamGroup(name, tuple(params), lr)
