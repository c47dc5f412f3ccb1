"""What differs between tasks: a ``Task`` per name, registered through
``ftkit_register_tasks`` like any plugin's; this module registers the built-in
segmentation and classification.

Imported at CLI start-up: metrics (and torch) are imported when built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ftkit.hooks import hookimpl

# What a label is: one class per pixel, or one class per image. Data, model
# families and losses exist for these two; a plugin's task reuses one of them.
TARGETS = ("segmentation", "classification")


@dataclass(frozen=True)
class Task:
    """``--task NAME``: what the model predicts and how it is judged.

    ``targets`` is the kind of label the data, models and losses work with
    ('segmentation' or 'classification'). ``monitor`` is the default metric
    for early stopping, best weights and the baseline guard; ``monitors`` are
    those ``--monitor`` may name. ``metrics(num_classes, ignore_index=,
    device=)`` returns an object with ``update(logits, target)``,
    ``compute() -> dict`` and a ``state`` tensor summed over ranks (see
    ``ftkit.metrics``). ``per_class`` is the key of ``compute()``'s per-class
    list that the summary reports.

    ``load_data(spec, model=, seed=, num_classes=)``, when given, opens
    ``--data`` itself and returns an ``ftkit.data.DataSplits`` (a task whose
    inputs are not images: text tokenised by the model's tokenizer, ``model``
    being the ``--model`` spec). Its ``collate`` batches the training items
    (dynamic padding); validation batches are stacked as they are. When its
    signature takes ``options`` (or ``**kwargs``), it is also called with
    ``options=``: the plugins' command-line options (``ftkit_add_options``),
    a dict of name to value, defaults filled in (``config.plugin_options``).
    ``load_data`` without it is called as before.
    """

    name: str
    targets: str
    monitor: str
    monitors: tuple[str, ...]
    metrics: Callable[..., Any]
    per_class: str
    ignore_index: int = -100
    load_data: Callable[..., Any] | None = None

    def __post_init__(self) -> None:
        # Checked here so a bad registration fails in its plugin's hook, named.
        if self.targets not in TARGETS:
            raise ValueError(f"task '{self.name}': targets must be one of {TARGETS}")
        if self.monitor not in self.monitors:
            raise ValueError(f"task '{self.name}': monitor '{self.monitor}' is not in monitors")

    def make_metrics(self, num_classes: int, device: Any) -> Any:
        return self.metrics(num_classes, ignore_index=self.ignore_index, device=device)


def segmentation_metrics(num_classes: int, *, ignore_index: int, device: Any) -> Any:
    from ftkit.metrics import SegmentationMetrics

    return SegmentationMetrics(num_classes, ignore_index, device=device)


def classification_metrics(num_classes: int, *, ignore_index: int, device: Any) -> Any:
    from ftkit.metrics import ClassificationMetrics

    return ClassificationMetrics(num_classes, device=device)


@hookimpl
def ftkit_register_tasks(register: Callable[[Task], None]) -> None:
    register(
        Task(
            "segmentation",
            "segmentation",
            "val_miou",
            ("val_miou", "val_pixel_accuracy", "val_mean_accuracy", "val_dice", "val_loss"),
            segmentation_metrics,
            "iou_per_class",
            ignore_index=255,
        )
    )
    register(
        Task(
            "classification",
            "classification",
            "val_accuracy",
            ("val_accuracy", "val_macro_f1", "val_top5", "val_loss"),
            classification_metrics,
            "f1_per_class",
        )
    )
