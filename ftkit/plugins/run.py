"""What lifecycle hooks see of a run (``ftkit_run_start`` ... ``ftkit_run_end``).

Part of the hook contract, so importable from ``ftkit`` without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from ftkit.config import Config
    from ftkit.plan.stages import Plan
    from ftkit.tasks import Task


@dataclass
class Run:
    """What lifecycle hooks see of a run."""

    config: Config
    plan: Plan
    model: torch.nn.Module
    dir: Path
    task: Task
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    start_epoch: int = 1
    samples: list[Any] = field(default_factory=list)  # (image, target, prediction) to show
    stop_reason: str | None = None

    def request_stop(self, reason: str) -> None:
        """Ask the engine to stop after the current epoch (for adaptive plugins)."""
        self.stop_reason = self.stop_reason or reason
