"""``Checkpoints``: ``last`` (the whole training state) after every
``every``-th trained epoch and when the run stops between two saves, and
``best`` (the weights) whenever the stoppers' verdict of the same epoch says
it improved. ``Session`` calls it after every other reader of the epoch, so
``last`` holds the state they left. Both are written by a ``Writer``, on a
background thread when asked (the epoch's ``best`` and ``last`` from one
staged copy, one job)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ftkit.checkpoint as ckpt
from ftkit.engine.rundir.layout import RunDir
from ftkit.engine.rundir.writer import Writer

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
        background: bool = False,
    ) -> None:
        self.out, self.state, self.weights = out, state, weights
        self.epochs, self.every, self.behind = epochs, every, False  # behind: since `last`
        self.writer = Writer(background)

    def after_epoch(self, record: EpochRecord, improved: bool) -> None:
        if not record.trained:
            return
        due = record.epoch % self.every == 0 or record.epoch == self.epochs
        self.behind = not due
        # other ranks hold the same weights: only rank 0 builds and writes
        if self.out.main and (improved or due):
            files = {"best": self.weights()} if improved else {}
            self.writer.write(files | ({"last": self.state()} if due else {}), self._save)

    def at_end(self, summary: Summary) -> None:
        if self.behind and summary.finished:  # stopped early between two saves
            self.save()

    def save(self) -> None:
        """``last`` now (an interrupt, the run's end)."""
        if self.out.main:
            self.writer.write({"last": self.state()}, self._save)
        self.behind = False

    def wait(self) -> None:
        """Until the write in flight is on disk (its error, if it failed)."""
        self.writer.wait()

    def finish(self) -> None:
        """Wait for the write in flight: a failed one raises its ``WriteError``."""
        self.writer.close()

    def _save(self, files: dict[str, Any]) -> None:
        if "best" in files:
            ckpt.save_weights(self.out.best, files["best"])
        if "last" in files:
            self.out.save(files["last"])
