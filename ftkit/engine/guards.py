"""Guards that watch training: gradient norms, non-finite steps, early
stopping and (from a baseline) the LR diagnosis of seed 004."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class GradNormAlert:
    """Warn once when the gradient norm stays above ``limit`` for ``window``
    steps in a row (seed 004: keep it under 10)."""

    limit: float
    window: int = 20
    streak: int = 0
    alerted: bool = False
    clip: float | None = None  # --clip-grad-norm: the norm watched is measured before it

    def update(self, norm: float) -> str | None:
        self.streak = self.streak + 1 if norm > self.limit else 0
        if self.streak >= self.window and not self.alerted:
            self.alerted = True
            head = (
                f"gradient norm above {self.limit:g} for {self.streak} steps in a row "
                f"(now {norm:.3g}"
            )
            if self.clip is None:
                return f"{head}): the LR may be too high; consider --clip-grad-norm"
            return (
                f"{head}, measured before clipping to {self.clip:g}): every step is being "
                "clipped, so the LR may be too high; consider a lower --lr"
            )
        return None


@dataclass
class NonFinite:
    """Counts skipped steps; too many in a row stops the run."""

    limit: int
    streak: int = 0
    total: int = 0

    def skipped(self) -> bool:
        self.streak += 1
        self.total += 1
        return self.streak >= self.limit

    def ok(self) -> None:
        self.streak = 0


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
