"""What differs between segmentation and classification, in one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Task:
    name: str
    monitor: str  # default metric for early stopping, best weights and the guard
    ignore_index: int
    monitors: tuple[str, ...]  # what --monitor may name

    def metrics(self, num_classes: int, device: Any) -> Any:
        from ftkit import metrics

        if self.name == "segmentation":
            return metrics.SegmentationMetrics(num_classes, self.ignore_index, device=device)
        return metrics.ClassificationMetrics(num_classes, device=device)

    @property
    def per_class(self) -> str:
        return "iou_per_class" if self.name == "segmentation" else "f1_per_class"


TASKS = {
    "segmentation": Task(
        "segmentation",
        "val_miou",
        255,
        ("val_miou", "val_pixel_accuracy", "val_mean_accuracy", "val_dice", "val_loss"),
    ),
    "classification": Task(
        "classification",
        "val_accuracy",
        -100,
        ("val_accuracy", "val_macro_f1", "val_top5", "val_loss"),
    ),
}
