"""The end of a run: ``summary.json`` and the table printed to the user.

When the run started from a baseline, the summary compares the baseline with
the final and best weights class by class, marking the rarest classes (by
their share of the training labels): a loss switch exists for them.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ftkit.engine.stoppers import BaselineGuard
from ftkit.plan.units import fmt_lr
from ftkit.plugins.records import Summary

DIAGNOSES = {
    "lr-too-high": "{monitor} fell below the baseline ({base:.4f}) and kept falling: the LR "
    "is too high and is destroying what the baseline learned; try --lr {lower}",
    "lr-too-low": "{monitor} and val_loss barely moved from the baseline in the first "
    "{epochs} epoch(s): the LR is too low to change anything; try --lr {higher}",
    "healthy": "{monitor} moved from the baseline without collapsing: the LR looks right",
}


def diagnosis_message(guard: BaselineGuard, monitor: str, lr: float) -> str:
    return DIAGNOSES.get(guard.diagnosis, guard.diagnosis).format(
        monitor=monitor,
        base=guard.baseline_metric,
        epochs=len(guard.history),
        lower=fmt_lr(lr / 10),
        higher=fmt_lr(lr * 10),
    )


def rare_classes(counts: list[int], class_names: list[str]) -> list[str]:
    """The classes with under a quarter of the median class's share of the
    training labels. Balanced data has none: the rarest class is not rare."""
    if not counts:
        return []
    median = sorted(counts)[len(counts) // 2]
    return [name for name, c in zip(class_names, counts, strict=True) if c < median / 4]


def empty_classes(counts: list[int], class_names: list[str]) -> list[str]:
    """A warning per class that no training label holds: the model cannot learn it."""
    return [
        f"class '{name}' has no training samples: the model cannot learn it, and its "
        "metrics will read 0 or '-'"
        for name, c in zip(class_names, counts, strict=True)
        if c == 0
    ]


def finite_or_none(value: Any) -> Any:
    """``value`` with every NaN or infinity, at any depth, replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def json_text(value: Any, indent: int | None = None) -> str:
    """Strict JSON: a non-finite number is written as null, never as the bare NaN
    that Python's json module writes and other readers refuse."""
    return json.dumps(finite_or_none(value), indent=indent, allow_nan=False)


def summarize(
    *,
    stop_reason: str,
    monitor: str,
    final: dict[str, Any] | None,
    best: dict[str, Any] | None,
    baseline: dict[str, Any] | None,
    class_names: list[str],
    label_counts: list[int],
    per_class: str,
    guard: BaselineGuard | None,
    lr: float,
) -> Summary:
    compared: dict[str, Any] = {}
    if baseline is not None and final is not None:
        key = f"val_{per_class}"
        compared["delta"] = {monitor: final[monitor] - baseline[monitor]}
        compared["delta_per_class"] = {
            name: _delta(f, b)
            for name, f, b in zip(class_names, final[key], baseline[key], strict=True)
        }
    return Summary(
        stop_reason=stop_reason,
        monitor=monitor,
        epochs_run=final["epoch"] if final else 0,
        final=final,
        best=best,
        class_names=class_names,
        label_counts=label_counts,
        rare_classes=rare_classes(label_counts, class_names),
        diagnosis=guard.diagnosis if guard else None,
        diagnosis_message=diagnosis_message(guard, monitor, lr) if guard else None,
        baseline=baseline,
        **compared,
    )


def _delta(after: float, before: float) -> float | None:
    value = after - before
    return None if math.isnan(value) else value


def summary_table(summary: Summary, per_class: str) -> str:
    monitor = summary.monitor
    key = f"val_{per_class}"
    names = ["baseline", "final", "best"] if summary.baseline else ["final", "best"]
    columns = [getattr(summary, name) for name in names]
    if any(column is None for column in columns):
        return ""
    epoch = summary.best.get("epoch") if summary.best else None
    header = [f"best (epoch {epoch})" if n == "best" and epoch is not None else n for n in names]
    rows = [("", *header)]

    def cells(value_of: Any) -> list[str]:
        return [_fmt(value_of(c)) for c in columns]

    rows.append((monitor, *cells(lambda c: c.get(monitor))))
    rows.append(("val_loss", *cells(lambda c: c.get("val_loss"))))
    rare = set(summary.rare_classes)
    for i, name in enumerate(summary.class_names):
        label = f"{per_class[: -len('_per_class')]} {name}" + (" (rare)" if name in rare else "")
        rows.append((label, *cells(lambda c, i=i: c[key][i])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.rjust(w) if j else cell.ljust(w)
            for j, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.append(f"best: the row of the epoch with the best {monitor}, not each metric's own best")
    if summary.delta_per_class:
        deltas = ", ".join(
            f"{name} {_fmt(d, signed=True)}" + ("*" if name in rare else "")
            for name, d in summary.delta_per_class.items()
        )
        lines.append(f"change per class (final - baseline; * rare): {deltas}")
    return "\n".join(lines)


def _fmt(value: Any, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:+.4f}" if signed else f"{value:.4f}"
