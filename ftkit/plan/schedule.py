"""LR schedules as pure functions of the step within a stage.

The engine multiplies each group's own LR from the plan by ``lr_factor``, so a
schedule never overwrites discriminative LRs with one number, and ``ftkit plan
--plot`` draws exactly what training will use.
"""

from __future__ import annotations

import math


def lr_factor(schedule: str, step: int, total: int, warmup: int = 0) -> float:
    """Multiplier for ``step`` (0-based) of ``total`` steps in a stage."""
    t = step / max(total, 1)
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return 1.0 - t
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if schedule == "warmup-cosine":
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))
    if schedule == "one-cycle":
        # Smith's one-cycle: rise from 1/25 over 30% of the stage, then anneal.
        peak = 0.3
        if t < peak:
            return 1 / 25 + (1 - 1 / 25) * 0.5 * (1 - math.cos(math.pi * t / peak))
        return 0.5 * (1.0 + math.cos(math.pi * (t - peak) / (1 - peak)))
    raise ValueError(f"unknown schedule {schedule!r}")
