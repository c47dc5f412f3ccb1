"""What a run prints. Under torchrun every rank runs the same code, so one
process (rank 0) speaks for the run; the others keep quiet. ``Report`` is
the run's voice as a lifecycle plugin: a line per stage and per epoch, and
the summary table at the end."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ftkit.hooks import hookimpl
from ftkit.plan.units import fmt_lr

if TYPE_CHECKING:
    from ftkit.plan.stages import Stage
    from ftkit.plugins.records import EpochRecord, Summary
    from ftkit.plugins.run import Run


@dataclass(frozen=True)
class Console:
    main: bool = True  # False on every rank but 0

    def say(self, message: str) -> None:
        if self.main:
            print(message, flush=True)

    def warn(self, message: str) -> None:
        if self.main:
            print(f"ftkit: warning: {message}", file=sys.stderr, flush=True)

    def progress(self, epoch: int, total: int, batches: int) -> tuple[Any, Any]:
        """A tqdm bar (rank 0, on a terminal only) and the callback that advances it."""
        from tqdm import tqdm

        bar = tqdm(
            total=batches,
            desc=f"epoch {epoch}/{total}",
            leave=False,
            disable=None if self.main else True,
            unit="batch",
        )
        start, images = time.perf_counter(), 0

        def advance(loss: float, n: int) -> None:
            nonlocal images
            images += n
            rate = images / max(time.perf_counter() - start, 1e-9)
            shown = f"{loss:.4f}" if math.isfinite(loss) else "-"  # read every --log-every steps
            bar.set_postfix(loss=shown, img_s=f"{rate:.0f}")
            bar.update(1)

        return bar, advance


class Report:
    """The run's lines on the console, as a lifecycle plugin."""

    def __init__(self, console: Console, monitor: str) -> None:
        self.console, self.monitor = console, monitor

    @hookimpl
    def ftkit_stage_start(self, run: Run, stage: Stage, index: int) -> None:
        trainable = sum(p.numel() for p in run.model.parameters() if p.requires_grad)
        lrs = ", ".join(f"{g.name} {fmt_lr(g.lr)}" for g in stage.groups if not g.no_decay)
        self.console.say(
            f"stage {index + 1}/{len(run.plan.stages)} '{stage.name}': {lrs}; "
            f"{trainable:,} trainable parameters"
        )

    @hookimpl
    def ftkit_epoch_end(self, record: EpochRecord) -> None:
        self.console.say(epoch_line(record, self.monitor))

    @hookimpl
    def ftkit_run_end(self, run: Run, summary: Summary) -> None:
        if not summary.finished:  # interrupted (it said how to resume) or an error
            return
        from ftkit.engine.summary import summary_table

        say, warn = self.console.say, self.console.warn
        say(summary_table(summary, run.task.per_class))
        if summary.diagnosis_message:
            (warn if summary.diagnosis != "healthy" else say)(
                f"diagnosis {summary.diagnosis}: {summary.diagnosis_message}"
            )
        best = summary.best
        at = f"{best[self.monitor]:.4f} at epoch {best['epoch']}" if best else "-"
        say(f"{summary.stop_reason} after {summary.epochs_run} epoch(s); best {self.monitor} {at}")
        say(f"run directory: {run.dir}\nview it with: tensorboard --logdir {run.dir / 'tb'}")


def epoch_line(record: EpochRecord, monitor: str) -> str:
    parts = [f"epoch {record.epoch:>3} [{record.stage}]"]
    if record.trained:
        parts.append(f"train_loss {record.train_loss:.4f}")
    parts.append(f"val_loss {record.val['val_loss']:.4f}")
    if monitor != "val_loss":
        parts.append(f"{monitor} {record.val.get(monitor, float('nan')):.4f}")
    if record.trained:
        parts.append(f"{record.seconds:.1f}s")
    return "  ".join(parts)
