"""``Checkpoints``: ``last`` (the whole training state) after every
``every``-th trained epoch and when the run stops between two saves, and
``best`` (the weights) whenever the stoppers' verdict of the same epoch says
it improved. ``Session`` calls it after every other reader of the epoch, so
``last`` holds the state they left."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ftkit.checkpoint as ckpt
from ftkit.engine.rundir.layout import RunDir

if TYPE_CHECKING:
    import torch

    from ftkit.plugins.records import EpochRecord, Summary


class Checkpoints:
    """The ``last`` and ``best`` of one run."""

    def __init__(
        self,
        out: RunDir,
        state: Callable[[], dict[str, Any]],
        weights: Callable[[], dict[str, torch.Tensor]],
        epochs: int,
        every: int = 1,
    ) -> None:
        self.out, self.state, self.weights = out, state, weights
        self.epochs, self.every, self.behind = epochs, every, False  # behind: since `last`

    def after_epoch(self, record: EpochRecord, improved: bool) -> None:
        if not record.trained:
            return
        if improved and self.out.main:
            ckpt.save_weights(self.out.best, self.weights())
        if record.epoch % self.every == 0 or record.epoch == self.epochs:
            self.save()
        else:
            self.behind = True

    def at_end(self, summary: Summary) -> None:
        if self.behind and summary.finished:  # stopped early between two saves
            self.save()

    def save(self) -> None:
        if self.out.main:  # other ranks hold the same weights: only rank 0 builds and writes
            self.out.save(self.state())
        self.behind = False
