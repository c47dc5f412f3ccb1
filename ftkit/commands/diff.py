"""``ftkit diff``: how far a run moved each group and tensor from its start
(the measures, also taken every epoch, are ``engine/train/drift.py``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from ftkit.checkpoint import BEST, START
from ftkit.engine.train.drift import relative_change, running_stats, stat_change
from ftkit.errors import UsageError

if TYPE_CHECKING:
    from ftkit.config import Config
    from ftkit.plugins.manager import Plugins


def diff(run_dir: Path, config: Config, plugins: Plugins, against: str | None = None) -> dict:
    """``ftkit diff``: each anatomy group's and tensor's change from the run's
    start (or ``against``) to its best weights, and the running statistics'."""
    from ftkit.models.weights import read_state
    from ftkit.prepare import prepare

    start_path = Path(against) if against else run_dir / "checkpoints" / START
    if not against and not start_path.is_file():
        raise UsageError(
            f"run '{run_dir}' has no {START} (it predates it); compare with --against FILE"
        )
    start, now = read_state(start_path), read_state(run_dir)
    missing = sorted(set(now) - set(start))
    if missing:
        raise UsageError(
            f"'{start_path}' lacks {len(missing)} of the run's tensors (first: '{missing[0]}'); "
            "expected weights of the same architecture"
        )
    for name, value in now.items():
        if start[name].shape != value.shape:
            raise UsageError(
                f"'{start_path}': '{name}' is {tuple(start[name].shape)}, the run's is "
                f"{tuple(value.shape)}; expected weights of the same architecture"
            )
    anatomy = prepare(config, plugins, load_weights=False).anatomy
    groups = []
    for layer in anatomy.layers:
        names = anatomy.params_of([layer])
        groups.append(
            {
                "name": layer.name,
                "part": layer.part,
                "relative_change": relative_change(start, now, names),
                "tensors": {name: relative_change(start, now, [name]) for name in names},
            }
        )
    stats = {name: stat_change(start, now, name) for name in running_stats(now)}
    return {
        "run": str(run_dir),
        "start": str(start_path),
        "weights": str(run_dir / "checkpoints" / BEST),
        "groups": groups,
        "running_stats": stats,
    }


def diff_table(report: dict) -> str:
    width = max([5, *(len(g["name"]) for g in report["groups"])])
    lines = [
        f"{report['weights']} against {report['start']}: ||w - w0|| / ||w0|| per group",
        f"  {'group':<{width}}  {'part':<8}  change",
    ]
    for g in report["groups"]:
        change = g["relative_change"]
        shown = "0 (unchanged)" if change == 0 else f"{change:.3g}"
        lines.append(f"  {g['name']:<{width}}  {g['part']:<8}  {shown}")
    stats = [v for v in report["running_stats"].values() if not math.isnan(v)]
    if report["running_stats"]:
        lines.append(
            f"BatchNorm running statistics: {len(report['running_stats'])} tensors, "
            f"largest change {max(stats, default=0.0):.3g}"
        )
    return "\n".join(lines)


def plot_diff(report: dict, path: str) -> None:
    """A bar per group; an unchanged (frozen) group is a visible 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [g["name"] for g in report["groups"]]
    values = [g["relative_change"] for g in report["groups"]]
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(names) + 2), 4))
    colours = ["tab:blue" if g["part"] == "backbone" else "tab:orange" for g in report["groups"]]
    ax.bar(range(len(names)), values, color=colours)
    for i, value in enumerate(values):
        if value == 0:
            ax.annotate("0", (i, 0), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("||w - w0|| / ||w0||")
    ax.set_title("change from the start (blue: backbone, orange: head)")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
