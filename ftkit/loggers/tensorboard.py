"""TensorBoard logging: a lifecycle plugin that every run registers for itself.

Writes to ``RUN_DIR/tb``: losses, every metric, IoU per class, LR per group,
gradient-norm statistics, trainable parameters, stage changes, the plan as
text, and input | truth | prediction panels of a few validation images (for
classification, truth and prediction are swatches of the class's colour with its
name written in them).
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from ftkit.hooks import hookimpl

if TYPE_CHECKING:
    from ftkit.plan.stages import Stage
    from ftkit.plugins.records import EpochRecord, Summary
    from ftkit.plugins.run import Run


class TensorBoard:
    """A run's ``SummaryWriter``, as a lifecycle plugin registered for the run."""

    writer: Any = None

    @hookimpl
    def ftkit_run_start(self, run: Run) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops events a crashed run wrote after its last checkpoint,
        # so a resumed run never logs a step twice or goes backwards.
        self.writer = SummaryWriter(str(run.dir / "tb"), purge_step=run.start_epoch)
        if run.start_epoch <= 1:
            plan = json.dumps(run.plan.to_json(), indent=2)
            self.writer.add_text("plan", f"```\n{plan}\n```", 0)

    @hookimpl
    def ftkit_stage_start(self, run: Run, stage: Stage, index: int) -> None:
        step = run.plan.epochs and sum(s.epochs for s in run.plan.stages[:index]) + 1
        trainable = sum(p.numel() for p in run.model.parameters() if p.requires_grad)
        self.writer.add_scalar("stage/index", index, step)
        self.writer.add_scalar("params/trainable", trainable, step)
        self.writer.add_text(
            "stage", f"stage {index + 1} '{stage.name}': {trainable:,} trainable", step
        )

    @hookimpl
    def ftkit_epoch_end(self, run: Run, record: EpochRecord) -> None:
        for tag, value in scalars(record, run.class_names):
            self.writer.add_scalar(tag, value, record.epoch)
        if run.samples and len(run.mean) == 3:  # images (a text task has no mean)
            self.writer.add_image(
                "val/input|truth|prediction", panels(run), record.epoch, dataformats="CHW"
            )
        self.writer.flush()

    @hookimpl
    def ftkit_run_end(self, summary: Summary) -> None:
        if self.writer is None:
            return
        if summary.diagnosis:
            self.writer.add_text("diagnosis", summary.diagnosis, summary.epochs_run)
        self.writer.add_text("stop_reason", summary.stop_reason, summary.epochs_run)
        self.writer.close()


def scalars(record: EpochRecord, class_names: list[str]) -> list[tuple[str, float]]:
    """The record's numbers as TensorBoard tags."""
    out: list[tuple[str, Any]] = []
    for name, value in record.metrics.items():
        out.append(("loss/val", value) if name == "loss" else (f"val/{name}", value))
    for metric, values in record.per_class.items():
        out += [
            (f"{metric}_per_class/{name}", v) for name, v in zip(class_names, values, strict=False)
        ]
    if record.trained:
        out.append(("loss/train", record.train_loss))
        out += [(f"lr/{name}", v) for name, v in record.lr.items()]
        out += [(f"grad_norm/{k}", v) for k, v in record.grad_norm.items()]
        out += [(f"weight_change/{k}", v) for k, v in record.weight_change.items()]
        out += [
            ("speed/seconds", record.seconds),
            ("speed/images_per_second", record.images_per_second),
            ("guard/skipped_steps", record.skipped_steps),
        ]
    return [
        (tag, float(v))
        for tag, v in out
        if isinstance(v, (int, float)) and not math.isnan(float(v))
    ]


def panels(run: Any) -> Any:
    """Rows of input | truth | prediction, masks in a fixed palette."""
    import torch

    mean = torch.tensor(run.mean).view(3, 1, 1)
    std = torch.tensor(run.std).view(3, 1, 1)
    palette = torch.tensor(_palette(len(run.class_names)), dtype=torch.float32) / 255
    rows = []
    for image, target, pred in run.samples:
        image = (image.float() * std + mean).clamp(0, 1)
        if target.ndim != 2:  # classification: the labels as named colour swatches
            size = tuple(image.shape[1:])
            swatches = palette[1:] if len(palette) > 1 else palette  # no class is "black: none"
            truth, guess = (
                _label_panel(run.class_names, swatches, int(label), size)
                for label in (target, pred)
            )
            rows.append(torch.cat([image, truth, guess], dim=2))
            continue
        truth = palette[target.clamp(0, len(palette) - 1)].permute(2, 0, 1)
        truth[:, target == 255] = 1.0
        guess = palette[pred.clamp(0, len(palette) - 1)].permute(2, 0, 1)
        rows.append(torch.cat([image, truth, guess], dim=2))
    return torch.cat([_width(row, rows[0].shape[2]) for row in rows], dim=1)


def _width(row: Any, width: int) -> Any:
    """``row`` scaled to ``width`` (images scored at their own size differ)."""
    import torch

    if row.shape[2] == width:
        return row
    height = max(1, round(row.shape[1] * width / row.shape[2]))
    return torch.nn.functional.interpolate(row[None], size=(height, width), mode="nearest")[0]


def _label_panel(names: list[str], palette: Any, label: int, size: tuple[int, int]) -> Any:
    """A (3, H, W) swatch in the class's palette colour with the class's name on it."""
    import numpy as np
    import torch
    from PIL import Image, ImageDraw

    colour = palette[min(max(label, 0), len(palette) - 1)]
    rgb = tuple(int(round(float(c) * 255)) for c in colour)
    panel = Image.new("RGB", (size[1], size[0]), rgb)
    name = names[label] if 0 <= label < len(names) else str(label)
    ink = (0, 0, 0) if sum(rgb) > 380 else (255, 255, 255)  # readable on light and dark
    ImageDraw.Draw(panel).text((2, 2), name, fill=ink)
    return torch.from_numpy(np.asarray(panel).copy()).permute(2, 0, 1).float() / 255


def _palette(n: int) -> list[list[int]]:
    base = [
        [0, 0, 0],
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
    ]
    # One more than the classes: index 0 (black) is a mask's background; a classifier's
    # swatches start at index 1, where class 0 gets a colour of its own.
    return [base[i % len(base)] for i in range(max(n, 1) + 1)]
