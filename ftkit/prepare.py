"""From a Config to a model, its anatomy and the plan: the one code path that
both ``ftkit plan`` and ``ftkit run`` take."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftkit.anatomy import Anatomy, anatomy_of
from ftkit.config import Config
from ftkit.errors import UsageError
from ftkit.options import resolve_options
from ftkit.plan import Plan, make_plan
from ftkit.strategy import PlanRequest, Strategy

if TYPE_CHECKING:
    from torch import nn

    from ftkit.data import DataSplits
    from ftkit.plugins.manager import Plugins


@dataclass
class Prepared:
    config: Config
    strategy: Strategy
    options: dict[str, Any]
    model: nn.Module
    anatomy: Anatomy
    plan: Plan
    num_classes: int
    loss: str
    class_weights: str | None
    data: DataSplits | None


def resolve_strategy(config: Config, plugins: Plugins) -> tuple[Strategy, dict[str, Any]]:
    strategy: Strategy = plugins.strategies.get(config.strategy)
    options = resolve_options(
        strategy.all_options(), config.strategy_options, f"strategy '{strategy.name}'"
    )
    if strategy.requires_from and not config.start_from:
        raise UsageError(
            f"strategy '{strategy.name}' needs --from CHECKPOINT "
            f"(the converged baseline to start from)"
        )
    for flag, path in (("--from", config.start_from), ("--weights", config.weights)):
        if path and not Path(path).exists():
            raise UsageError(f"{flag} '{path}' not found")
    return strategy, options


def prepare(config: Config, plugins: Plugins) -> Prepared:
    from ftkit.models import build_model

    strategy, options = resolve_strategy(config, plugins)
    loss = config.loss or strategy.default_loss or "ce"
    check_loss(loss, plugins)
    data = None
    num_classes = config.num_classes
    if num_classes is None:  # the data says how many classes there are
        data = open_data(config, plugins, num_classes)
        num_classes = num_classes or data.num_classes
    model = build_model(
        config.model_spec, num_classes=num_classes, task=config.task, plugins=plugins
    )
    anatomy = anatomy_of(model, [entry.value for entry in plugins.anatomies])
    request = PlanRequest(
        lr=config.lr,
        epochs=config.epochs,
        options=options,
        from_checkpoint=bool(config.start_from),
        new_loss=config.loss is not None,
        pretrained=bool(config.weights),
        optimizer=config.optimizer,
    )
    plan = make_plan(strategy, anatomy, request, loss=loss)
    class_weights = config.class_weights or strategy.default_class_weights
    return Prepared(
        config, strategy, options, model, anatomy, plan, num_classes, loss, class_weights, data
    )


def check_loss(spec: str, plugins: Plugins) -> None:
    from ftkit.losses import parse_loss

    parse_loss(spec, plugins.losses.names())


def open_data(config: Config, plugins: Plugins, num_classes: int | None = None) -> DataSplits:
    from ftkit.data import load_data

    return load_data(
        config.data,
        config.task,
        plugins.datasets,
        image_size=config.image_size,
        num_samples=config.num_samples,
        seed=config.seed,
        augment=config.augment,
        num_classes=num_classes,
    )


def model_data(prepared: Prepared, plugins: Plugins) -> DataSplits:
    """The data with the model's normalisation, opened once."""
    from ftkit.models import normalization

    data = prepared.data or open_data(prepared.config, plugins, prepared.num_classes)
    mean, std = normalization(prepared.model)
    return data.with_transforms(augment=prepared.config.augment, mean=mean, std=std)
