"""What an epoch and a finished run report: ``EpochRecord`` (a line of
``metrics.jsonl``) and ``Summary`` (``summary.json``).

Part of the hook contract (``ftkit_epoch_end``, ``ftkit_run_end``), so
importable from ``ftkit`` without torch. Both read like the JSON they write
(``record["val_miou"]``) for plugins written against the dicts they replace.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

PER_CLASS = "_per_class"


class _ReadsLikeJson:
    """``obj[key]``, ``obj.get(key)`` and ``key in obj`` read ``to_json()``."""

    def to_json(self) -> dict[str, Any]:
        raise NotImplementedError

    def __getitem__(self, key: str) -> Any:
        return self.to_json()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_json().get(key, default)

    def __contains__(self, key: str) -> bool:
        return key in self.to_json()


@dataclass(frozen=True)
class EpochRecord(_ReadsLikeJson):
    """One epoch's figures. Epoch 0 is the baseline evaluation of a run that
    starts from a checkpoint: validation only, nothing trained."""

    stage: str
    epoch: int
    val: dict[str, Any]  # val_loss and the task's val_<metric> (and val_<metric>_per_class)
    train_loss: float | None = None
    lr: dict[str, float] = field(default_factory=dict)  # per parameter group
    grad_norm: dict[str, float] = field(default_factory=dict)  # mean and max
    skipped_steps: int = 0
    seconds: float = 0.0
    images_per_second: float = 0.0
    # per anatomy group, ||w - w0|| / ||w0|| against the run's starting weights
    weight_change: dict[str, float] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)  # with --ema: the raw model's val figures

    @property
    def trained(self) -> bool:
        return self.train_loss is not None

    @property
    def metrics(self) -> dict[str, float]:
        """Each scalar validation figure by name (``loss``, ``miou``, ...)."""
        return {k[4:]: v for k, v in self.val.items() if isinstance(v, (int, float))}

    @property
    def per_class(self) -> dict[str, list[float]]:
        """Each per-class validation figure by metric (``iou``, ``f1``, ...)."""
        return {
            k[4 : -len(PER_CLASS)]: v
            for k, v in self.val.items()
            if k.endswith(PER_CLASS) and isinstance(v, list)
        }

    def to_json(self) -> dict[str, Any]:
        head = {"stage": self.stage, "epoch": self.epoch}
        if not self.trained:
            return {**head, **self.val}
        return {
            **head,
            "train_loss": self.train_loss,
            **self.val,
            "lr": self.lr,
            "grad_norm": self.grad_norm,
            "skipped_steps": self.skipped_steps,
            "seconds": self.seconds,
            "images_per_second": self.images_per_second,
            "weight_change": self.weight_change,
            **({"raw": self.raw} if self.raw else {}),
        }


@dataclass(frozen=True)
class Summary(_ReadsLikeJson):
    """How a run ended and its final, best (and baseline) figures."""

    stop_reason: str
    monitor: str
    epochs_run: int
    final: dict[str, Any] | None  # EpochRecord.to_json() of the last epoch
    best: dict[str, Any] | None  # ... of the epoch with the best monitored value
    class_names: list[str]
    label_counts: list[int]
    rare_classes: list[str]
    # from the baseline guard, when the run started from a checkpoint
    diagnosis: str | None = None
    diagnosis_message: str | None = None
    baseline: dict[str, Any] | None = None
    delta: dict[str, float] | None = None
    delta_per_class: dict[str, float | None] | None = None

    OPTIONAL = ("diagnosis", "diagnosis_message", "baseline", "delta", "delta_per_class")

    @property
    def finished(self) -> bool:
        """False when interrupted (resumable) or ended by an error."""
        return self.stop_reason not in ("interrupted", "error")

    def to_json(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: v for k, v in values.items() if k not in self.OPTIONAL or v is not None}
