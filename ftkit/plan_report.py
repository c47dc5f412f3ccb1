"""Human-readable output: the plan table, the LR plot, number formats."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ftkit.config import Config
from ftkit.errors import UsageError
from ftkit.plan.anatomy import Anatomy
from ftkit.plan.schedule import lr_factor
from ftkit.plan.stages import Plan
from ftkit.plan.units import fmt_lr


def plan_table(plan: Plan, anatomy: Anatomy, config: Config, start: Sequence[str] = ()) -> str:
    """The plan as a table; ``start`` lines say what the weights are and want."""
    total = sum(anatomy.sizes.values())
    lines = [
        f"strategy {plan.strategy} on {config.model_spec} ({total:,} parameters, "
        f"anatomy: {anatomy.provider}), base LR {fmt_lr(config.lr)}, "
        f"optimizer {config.optimizer}"
    ]
    lines += [f"  {line}" for line in start]
    # the name column fits the longest name (smp tu- encoders: encoder.model.blocks.11+norm)
    width = max([24, *(len(g.label) for stage in plan.stages for g in stage.groups)])
    for i, stage in enumerate(plan.stages, 1):
        lines.append("")
        lines.append(
            f"stage {i}/{len(plan.stages)} '{stage.name}': {stage.epochs} epoch(s), "
            f"loss {stage.loss}, schedule {stage.schedule}"
        )
        pulls = any(g.l2sp for g in stage.groups)  # -o l2sp: its column
        l2sp = f" {'l2sp':>7}" if pulls else ""
        lines.append(f"  {'group':<{width}} {'params':>12} {'lr':>9} {'wd':>7}{l2sp}  bn")
        for g in stage.groups:
            l2sp = f" {g.l2sp:>7g}" if pulls else ""
            lines.append(
                f"  {g.label:<{width}} {g.num_params:>12,} {fmt_lr(g.lr):>9} "
                f"{g.weight_decay:>7g}{l2sp}  {g.bn_mode}"
            )
        frozen = sum(anatomy.sizes[p] for p in stage.frozen)
        trainable = total - frozen
        lines.append(
            f"  trainable {trainable:,} ({100 * trainable / total:.1f}%), "
            f"frozen {frozen:,} in {len(stage.frozen)} tensors"
            + (f" (BatchNorm there: {stage.bn_mode})" if stage.frozen else "")
        )
    lines.append("")
    if plan.warnings:
        lines.append(f"{len(plan.warnings)} warning(s):")
        lines += [f"  ! {w}" for w in plan.warnings]
    else:
        lines.append("no LR warnings")
    return "\n".join(lines)


def plot_plan(plan: Plan, steps_per_epoch: int, path: str) -> None:
    fig = plan_figure(plan, steps_per_epoch)
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def plan_figure(plan: Plan, steps_per_epoch: int) -> Any:
    """Every group's LR over the run's steps, one distinct colour per group and
    the legend beside the axes, where it hides no curve (llrd has ~20 groups)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'ftkit[plot]'") from None
    series: dict[str, tuple[list[int], list[float]]] = {}
    start = 0
    for stage in plan.stages:
        total = stage.epochs * steps_per_epoch
        warmup = round(stage.warmup_epochs * steps_per_epoch)
        for g in stage.groups:
            if g.no_decay:  # its LR is its group's
                continue
            xs, ys = series.setdefault(g.name, ([], []))
            for step in range(total):
                xs.append(start + step)
                ys.append(g.lr * lr_factor(stage.schedule, step, total, warmup))
        start += total
    fig, ax = plt.subplots(figsize=(8, 4.5))
    # the default colour cycle repeats after 10; turbo spreads any number apart
    colours = plt.get_cmap("turbo")(np.linspace(0.05, 0.95, max(len(series), 1)))
    for colour, (name, (xs, ys)) in zip(colours, series.items(), strict=False):
        ax.plot(xs, ys, label=name, color=tuple(colour))
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.set_title(f"{plan.strategy}: LR per group")
    ax.legend(
        fontsize="small",
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0.0,
        ncols=1 + len(series) // 25,
    )
    fig.tight_layout()
    return fig
