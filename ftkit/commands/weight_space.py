"""Weight space: mixes of weights that share a starting point, scored on the
validation split. ``ftkit interpolate`` is WiSE-FT (Wortsman et al. 2022),
the start and the fine-tune mixed at several alphas; ``ftkit soup`` is a
greedy model soup over fine-tunes of one start (Wortsman et al. 2022)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ftkit.checkpoint import BEST, START, save_weights
from ftkit.commands.evaluate import Evaluator
from ftkit.config import Config
from ftkit.engine.rundir.resume import check_run_data
from ftkit.errors import UsageError
from ftkit.models.weights import read_state
from ftkit.plugins.manager import Plugins


def mix(
    start: dict[str, torch.Tensor],
    tuned: dict[str, torch.Tensor],
    alpha: float,
    keys: set[str] | None = None,
) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * start + alpha * tuned`` for every float tensor (of ``keys``
    only, when given; the others stay tuned). Exact at 0 and at 1."""
    return {
        k: (1 - alpha) * start[k] + alpha * v
        if v.is_floating_point() and (keys is None or k in keys)
        else v
        for k, v in tuned.items()
    }


def interpolate(
    run_dir: Path,
    config: Config,
    plugins: Plugins,
    alphas: list[float],
    backbone_only: bool = False,
) -> dict[str, Any]:
    """WiSE-FT: the run's start and best weights mixed at each alpha, scored;
    the best alpha's weights written as ``checkpoints/interpolated.safetensors``."""
    check_run_data(run_dir, config)
    start_path = run_dir / "checkpoints" / START
    if not start_path.is_file():
        raise UsageError(f"run '{run_dir}' has no checkpoints/{START} to interpolate from")
    start, tuned = read_state(start_path), read_state(run_dir)
    evaluator = Evaluator(config, plugins)
    plan = json.loads((run_dir / "plan.json").read_text())
    note = None
    if plan.get("new_head", False) and not backbone_only:
        backbone_only = True  # mixing in a random head only adds noise
        note = "the run's head started new (random): only the backbone is mixed"
    keys = None
    if backbone_only:
        anatomy = evaluator.prepared.anatomy
        modules = {p.rsplit(".", 1)[0] for p in anatomy.params_of(anatomy.backbone)}
        keys = {k for k in tuned if k.rsplit(".", 1)[0] in modules}  # BN statistics too
    per_class = f"val_{evaluator.task.per_class}"
    monitor = evaluator.monitor
    rows = []
    for alpha in alphas:
        metrics = evaluator.score(mix(start, tuned, alpha, keys), f"alpha {alpha:g}")
        rows.append(
            {
                "alpha": alpha,
                monitor: metrics[monitor],
                "val_loss": metrics["val_loss"],
                per_class: metrics.get(per_class, []),
            }
        )
    sign = -1 if "loss" in monitor else 1
    best = max(rows, key=lambda r: sign * r[monitor])
    weights = run_dir / "checkpoints" / "interpolated.safetensors"
    notes = []
    if best["alpha"] == 1:  # the fine-tune itself: no copy of it
        weights = run_dir / "checkpoints" / BEST
    else:
        if weights.exists():
            notes.append(f"replaced the previous '{weights}'")
        save_weights(weights, mix(start, tuned, best["alpha"], keys))
    return {
        "notes": notes,
        "run": str(run_dir),
        "monitor": monitor,
        "backbone_only": backbone_only,
        "note": note,
        "class_names": evaluator.data.class_names,
        "per_class": per_class,
        "rows": rows,
        "best_alpha": best["alpha"],
        "weights": str(weights),
    }


def average(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The uniform mean of float tensors; others (step counters) from the first."""
    if len(states) == 1:
        return dict(states[0])
    first = states[0]
    return {
        k: torch.stack([s[k] for s in states]).mean(dim=0) if v.is_floating_point() else v
        for k, v in first.items()
    }


def soup(runs: list[Path], config: Config, plugins: Plugins, out: Path) -> dict[str, Any]:
    """Greedy soup: the runs by their own validation score, each added to the
    average only if the score does not drop; the uniform soup reported too."""
    starts = {}
    for run in runs:
        path = run / "checkpoints" / START
        if not path.is_file():
            raise UsageError(f"run '{run}' has no checkpoints/{START}: its start is unknown")
        starts[run] = read_state(path)
    first = runs[0]
    for run in runs[1:]:
        reason = _differs(starts[first], starts[run])
        if reason:
            raise UsageError(
                f"runs '{first}' and '{run}' do not share a starting point ({reason}); "
                "a soup averages fine-tunes of one start"
            )
    check_run_data(first, config)
    evaluator = Evaluator(config, plugins)
    monitor = evaluator.monitor
    sign = -1 if "loss" in monitor else 1
    tuned = {run: read_state(run) for run in runs}
    scores = {run: evaluator.score(tuned[run], str(run))[monitor] for run in runs}
    ranked = sorted(runs, key=lambda r: -sign * scores[r])
    kept = [ranked[0]]
    best = scores[ranked[0]]
    for run in ranked[1:]:
        score = evaluator.score(average([tuned[r] for r in [*kept, run]]), "soup")[monitor]
        if sign * score >= sign * best:
            kept, best = [*kept, run], score
    weights = average([tuned[r] for r in kept])
    uniform = evaluator.score(average([tuned[r] for r in runs]), "uniform soup")[monitor]
    final = evaluator.score(weights, "greedy soup")
    save_weights(out, weights)
    return {
        "monitor": monitor,
        "runs": [{"run": str(r), monitor: scores[r], "in_soup": r in kept} for r in ranked],
        "greedy": {monitor: final[monitor], "runs": [str(r) for r in kept], **final},
        "uniform": {monitor: uniform},
        "weights": str(out),
    }


def _differs(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> str | None:
    if a.keys() != b.keys():
        return "different architectures"
    for k in a:
        if a[k].shape != b[k].shape:
            return f"'{k}' is {tuple(a[k].shape)} in one, {tuple(b[k].shape)} in the other"
        if not torch.equal(a[k], b[k]):
            return f"their start weights differ, first at '{k}'"
    return None


def interpolation_table(report: dict[str, Any]) -> str:
    monitor, per_class, names = report["monitor"], report["per_class"], report["class_names"]
    label = per_class.removeprefix("val_").removesuffix("_per_class")
    head = ["alpha", monitor, "val_loss", *(f"{label} {n}" for n in names)]
    lines = ["  ".join(f"{h:>10}" for h in head)]
    for row in report["rows"]:
        cells = [row["alpha"], row[monitor], row["val_loss"], *row[per_class]]
        mark = "  <- best" if row["alpha"] == report["best_alpha"] else ""
        lines.append("  ".join(_cell(c) for c in cells) + mark)
    what = "backbone only, head fine-tuned" if report["backbone_only"] else "all weights"
    if report.get("note"):
        lines.append(report["note"])
    lines.append(
        f"alpha 0 is the start, 1 the fine-tune ({what}); best alpha {report['best_alpha']:g}, "
        f"its weights in {report['weights']}"
    )
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return f"{'-':>10}"
    return f"{value:>10.4f}"


def plot_interpolation(report: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    alphas = [r["alpha"] for r in report["rows"]]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(alphas, [r[report["monitor"]] for r in report["rows"]], "k-o", label=report["monitor"])
    for i, name in enumerate(report["class_names"]):
        values = [r[report["per_class"]][i] for r in report["rows"]]
        ax.plot(alphas, values, "--", alpha=0.7, label=name)
    ax.axvline(report["best_alpha"], color="grey", lw=0.8)
    ax.set_xlabel("alpha: (1 - alpha) * start + alpha * fine-tuned")
    ax.set_ylabel(f"{report['monitor']} and per-class {report['per_class']}")
    what = "backbone only" if report["backbone_only"] else "all weights"
    ax.set_title(f"WiSE-FT of {Path(report['run']).name} ({what})")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
