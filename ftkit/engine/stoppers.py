"""What decides after an epoch: early stopping and (from a baseline) the
guard that reads the LR as too high or too low (docs/recipes.md, the loss
switch). Every stopper answers ``check(record) -> reason | None`` and keeps
its state in ``state_dict()``, so a resumed run decides as the killed one would.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ftkit.config import Config
    from ftkit.engine.train.state import RunState
    from ftkit.plugins.records import EpochRecord


@dataclass
class EarlyStopping:
    """The best epoch of the run (for the best weights), and patience counted
    within a stage: a stage changes what trains, so its first epochs are not
    comparable with the last stage's best. Each stage starts a fresh count
    against its own best, so an unfreeze's dip never ends the run before the
    new stage had ``patience`` epochs to improve on its first."""

    monitor: str
    patience: int | None
    min_delta: float = 0.0
    best: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    stage_best: float | None = None

    @property
    def mode(self) -> str:
        return "min" if "loss" in self.monitor else "max"

    def start_stage(self) -> None:
        self.stage_best, self.bad_epochs = None, 0

    def _better(self, value: float, than: float | None) -> bool:
        sign = -1 if self.mode == "min" else 1
        return than is None or sign * (value - than) > self.min_delta

    def update(self, epoch: int, record: dict[str, Any]) -> bool:
        """Record an epoch; True when it is the best so far."""
        value = record.get(self.monitor)
        if value is None or not math.isfinite(value):
            self.bad_epochs += 1
            return False
        if self._better(value, self.stage_best):
            self.stage_best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        if self._better(value, self.best):
            self.best, self.best_epoch = value, epoch
            return True
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience

    def check(self, record: EpochRecord) -> str | None:
        self.update(record.epoch, record.val)
        return "early-stopping" if self.should_stop else None

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BaselineGuard:
    """Reads the first epochs against the baseline, as seed 004 says:

    - the metric below the baseline by more than ``tolerance`` and still falling
      on the next epoch, or below it for the whole watch: the LR is too high,
      stop (a drop that never recovers is no more healthy than one that falls);
    - metric and loss almost unchanged: the LR is too low (keep going);
    - otherwise healthy.
    """

    baseline_metric: float
    baseline_loss: float
    epochs: int = 5
    tolerance: float = 0.01
    still: float = 0.002  # "almost unchanged": within 0.2 points of mIoU
    loss_still: float = 0.01  # and within 1% of the baseline loss
    history: list[tuple[float, float]] = field(default_factory=list)
    diagnosis: str = "pending"
    monitor: str = "val_miou"

    def update(self, metric: float, loss: float) -> str | None:
        """Returns 'lr-too-high' when training must stop."""
        if len(self.history) >= self.epochs:
            return None
        previous = self.history[-1][0] if self.history else None
        self.history.append((metric, loss))
        floor = self.baseline_metric - self.tolerance
        falling = previous is not None and previous < floor and metric < previous
        stayed_below = len(self.history) == self.epochs and all(m < floor for m, _ in self.history)
        if metric < floor and (falling or stayed_below):
            self.diagnosis = "lr-too-high"
            return self.diagnosis
        moved = any(
            abs(m - self.baseline_metric) > self.still
            or abs(lo - self.baseline_loss) > self.loss_still * abs(self.baseline_loss)
            for m, lo in self.history
        )
        self.diagnosis = "healthy" if moved else "lr-too-low"
        return None

    def check(self, record: EpochRecord) -> str | None:
        stop = self.update(record.val[self.monitor], record.val["val_loss"])
        return "baseline-guard" if stop else None

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)


class Stopper(Protocol):
    def check(self, record: EpochRecord) -> str | None: ...

    def state_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Verdict:
    """What the stoppers make of an epoch: whether it is the best so far
    (``best`` is written from it), and why the run must stop, if it must."""

    improved: bool = False
    stop: str | None = None


class Stoppers:
    """A run's stoppers. ``Session`` asks them after each epoch, before any
    plugin hears of it: the first reason wins (the guard before early
    stopping), and the best epoch is noted for ``best``. Their state goes into
    the run's ``RunState`` and so into ``last``."""

    def __init__(self, config: Config, monitor: str, state: RunState) -> None:
        self.config, self.state = config, state
        self.early = (
            EarlyStopping(**state.stopper)
            if state.stopper
            else EarlyStopping(monitor, config.patience, config.min_delta)
        )
        self.guard = BaselineGuard(**state.guard) if state.guard else None

    def store(self) -> None:
        """Their state into the run's, for ``last``."""
        self.state.stopper = self.early.state_dict()
        self.state.guard = self.guard.state_dict() if self.guard else None

    def start_stage(self) -> None:
        self.early.start_stage()  # patience counts within a stage (--patience)

    def check(self, record: EpochRecord) -> Verdict:
        if not record.trained:  # the baseline: what the guard compares with
            if self.config.guard:
                monitor = self.early.monitor
                self.guard = BaselineGuard(
                    record.val[monitor],
                    record.val["val_loss"],
                    self.config.guard_epochs,
                    self.config.guard_tolerance,
                    monitor=monitor,
                )
            return Verdict()
        stoppers: list[Stopper] = [s for s in (self.guard, self.early) if s is not None]
        reasons = [stopper.check(record) for stopper in stoppers]  # each sees every epoch
        improved = self.early.best_epoch == record.epoch
        if improved:
            self.state.best = record.to_json()
        return Verdict(improved, next((r for r in reasons if r), None))
