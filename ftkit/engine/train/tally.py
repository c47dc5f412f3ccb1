"""An epoch's running figures, kept on the device so that a step needs no host
sync: the loss sum and count, the gradient norm's sum, count and maximum, the
skipped steps, and the two streaks the guards watch (non-finite steps, norms
above the alert's limit). ``read`` brings them to the host in one transfer,
every ``--log-every`` steps and at the epoch's end (torchtitan reads its loss
only on logging steps, for the same reason: each read stops the host from
queueing the next step's kernels).

The sums are cumulative over the epoch and start from the figures an
interrupted epoch saved, so they add the same values in the same order as an
uninterrupted epoch: a resume stays exact whenever the reads happen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ftkit.engine.train.guards import GradNormAlert, NonFinite


@dataclass
class EpochProgress:
    """An epoch's running totals on the host, as of the last read. Kept on the
    loop so that an interrupted epoch can be checkpointed and resumed at the
    exact batch where it stopped."""

    batches: int = 0  # batches consumed
    steps: int = 0  # optimizer steps, skipped ones included
    skipped: int = 0
    images: int = 0
    seconds: float = 0.0
    loss_sum: float = 0.0  # over the finite micro-batch losses
    loss_count: int = 0
    norm_sum: float = 0.0  # over the steps taken
    norm_count: int = 0
    norm_max: float = -math.inf
    warnings: list[str] = field(default_factory=list)
    complete: bool = False

    @property
    def loss(self) -> float:
        return self.loss_sum / self.loss_count if self.loss_count else math.nan

    @property
    def grad_norm_mean(self) -> float:
        return self.norm_sum / self.norm_count if self.norm_count else math.nan

    @property
    def grad_norm_max(self) -> float:
        return self.norm_max if self.norm_count else math.nan

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> EpochProgress:
        """A saved epoch, also one saved with lists of every loss and norm (before the tally)."""
        state = dict(state)
        losses, norms = state.pop("losses", None), state.pop("norms", None)
        if losses is not None:
            state.update(loss_sum=sum(losses), loss_count=len(losses))
        if norms is not None:
            state.update(norm_sum=sum(norms), norm_count=len(norms))
            state["norm_max"] = max(norms, default=-math.inf)
        return cls(**state)


class Tally:
    def __init__(
        self,
        device: torch.device,
        epoch: EpochProgress,
        alert: GradNormAlert,
        nonfinite: NonFinite,
    ) -> None:
        # float64 sums, as Python's: MPS has no float64, so there they live on the CPU
        self.home = home = torch.device("cpu") if device.type == "mps" else device

        def f64(value: float) -> torch.Tensor:
            return torch.tensor(value, dtype=torch.float64, device=home)

        self.limit = alert.limit
        self.loss_sum, self.loss_count = f64(epoch.loss_sum), f64(epoch.loss_count)
        self.norm_sum, self.norm_count = f64(epoch.norm_sum), f64(epoch.norm_count)
        self.norm_max, self.skipped = f64(epoch.norm_max), f64(epoch.skipped)
        self.streak, self.worst = f64(nonfinite.streak), f64(nonfinite.streak)
        self.above, self.longest = f64(alert.streak), f64(alert.streak)
        self.norm = f64(math.nan)
        self.pending = torch.zeros((), dtype=torch.bool, device=home)  # this step's losses

    def add_loss(self, loss: torch.Tensor) -> None:
        """A micro-batch's loss: summed when finite; a non-finite one marks its step."""
        value = loss.detach().to(self.home).double()
        finite = torch.isfinite(value)
        self.loss_sum += torch.where(finite, value, 0.0)
        self.loss_count += finite
        self.pending |= ~finite

    def add_step(self, norm: torch.Tensor, skipped: torch.Tensor) -> None:
        """An optimizer step with its total gradient norm, taken or ``skipped``."""
        skipped = skipped.to(self.home)
        taken, norm = ~skipped, norm.detach().to(self.home).double()
        self.norm_sum += torch.where(taken, norm, 0.0)
        self.norm_count += taken
        self.norm_max = torch.where(taken, torch.maximum(self.norm_max, norm), self.norm_max)
        self.norm = torch.where(taken, norm, self.norm)
        self.skipped += skipped
        self.streak = torch.where(skipped, self.streak + 1, 0.0)
        self.worst = torch.maximum(self.worst, self.streak)
        # a skipped step neither extends nor breaks the alert's streak (as before)
        grown = torch.where(norm > self.limit, self.above + 1, 0.0)
        self.above = torch.where(taken, grown, self.above)
        self.longest = torch.maximum(self.longest, self.above)
        self.pending = torch.zeros_like(self.pending)

    def read(self, epoch: EpochProgress, alert: GradNormAlert, nonfinite: NonFinite) -> bool:
        """The figures into ``epoch`` and the guards, in one transfer (a host sync
        on a GPU); True when too many non-finite steps came in a row."""
        values = torch.stack(
            [
                self.loss_sum, self.loss_count, self.norm_sum, self.norm_count, self.norm_max,
                self.skipped, self.streak, self.worst, self.above, self.longest, self.norm,
            ]
        ).tolist()  # fmt: skip
        self.worst, self.longest = self.streak.clone(), self.above.clone()
        epoch.loss_sum, loss_count, epoch.norm_sum, norm_count, epoch.norm_max = values[:5]
        skipped, streak, worst, above, longest, norm = (*map(int, values[5:10]), values[10])
        epoch.loss_count, epoch.norm_count = int(loss_count), int(norm_count)
        nonfinite.total += skipped - epoch.skipped
        epoch.skipped, nonfinite.streak = skipped, streak
        note = alert.observe(above, longest, norm)
        if note:
            epoch.warnings.append(note)
        return worst >= nonfinite.limit
