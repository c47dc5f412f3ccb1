"""Scoring weights on a dataset's validation split: ``ftkit eval`` (one
checkpoint), ``ftkit interpolate`` and ``ftkit soup`` (many mixes of weights,
commands/weight_space.py) share one ``Evaluator``, built once per command."""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ftkit.checkpoint import atomic_write
from ftkit.commands.calibration import calibrated, doubts, fit_temperature
from ftkit.config import Config, read_run_config, run_dir_of
from ftkit.data.folders import SPLIT_FILE, hold_back_added, split_record
from ftkit.data.load import is_folder
from ftkit.engine.rundir.resume import check_run_data
from ftkit.engine.summary import json_text
from ftkit.engine.train.criterion import make_loss
from ftkit.engine.train.distributed import scoring_batches
from ftkit.engine.train.loaders import device_loader
from ftkit.engine.train.loop import evaluate
from ftkit.errors import UsageError
from ftkit.models.weights import fit_weights, read_state, weights_file
from ftkit.plugins.manager import Plugins
from ftkit.plugins.records import PER_CLASS
from ftkit.prepare import model_data, prepare
from ftkit.resolve import loader_settings, pick_device

CALIBRATION = "calibration.json"  # in the run directory: --calibrate's temperature


class Evaluator:
    """A model of ``config``'s architecture, the validation data and the loss:
    ``score(state)`` gives the validation metrics of those weights."""

    def __init__(
        self,
        config: Config,
        plugins: Plugins,
        split: str = "val",
        recorded: dict[str, Any] | None = None,
    ) -> None:
        """``recorded``: a run's ``split.json``; files it does not know are not scored."""
        self.prepared = prepare(config, plugins, load_weights=False)
        self.device = pick_device(config.device)
        self.split = split
        self.held_back: list[str] = []
        if recorded is not None:
            self.held_back = hold_back_added(self.prepared.data, Path(config.data), recorded)
        self.data = model_data(self.prepared).scored(split)
        self.loader = device_loader(
            self.data.val,
            self.device,
            **scoring_batches(self.data.val, config.batch_size),
            num_workers=loader_settings(config, self.device.type).workers,
        )
        self.task = plugins.tasks.get(config.task)
        self.monitor = config.monitor or self.task.monitor
        self.loss_fn, _ = make_loss(self.prepared, self.data, plugins)  # training's line
        self.amp = config.amp

    def score(
        self,
        state: dict[str, torch.Tensor],
        source: str,
        tta: str = "none",
        on_batch: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
    ) -> dict[str, Any]:
        model = self.prepared.model
        fit_weights(model, self.prepared.anatomy, state, source=source, exact=True)
        model.to(self.device)
        with torch.inference_mode():
            metrics, _ = evaluate(
                model, self.loader, self.loss_fn, self.task, self.prepared.num_classes,
                self.device, amp=self.amp, tta=tta, on_batch=on_batch,
                window=self.prepared.config.slide_window,
            )  # fmt: skip
        return metrics


def _recorded_split(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / SPLIT_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def scored_split(requested: str, config: Config, run_dir: Path | None) -> str:
    """``auto``: a run's own data folder is scored on its validation split, as training
    scored it; any other folder is a test set, scored whole unless it has train/ and
    val/ (or VOC's lists) of its own."""
    if requested != "auto":
        return requested
    if not is_folder(config.data):
        return "val"
    if run_dir and read_run_config(run_dir).get("data") == config.data:
        return "val"
    from ftkit.data.folders import has_own_split

    return "val" if has_own_split(Path(config.data)) else "all"


def evaluate_checkpoint(
    path: str,
    config: Config,
    plugins: Plugins,
    tta: str = "none",
    calibrate: bool = False,
    split: str = "auto",
) -> dict[str, Any]:
    """``ftkit eval``: the metrics, each class's support, and for a classifier
    the temperature (``calibrate`` fits and stores it; a stored one is applied).
    ``notes`` are lines for the user (stderr), not figures."""
    targets = plugins.tasks.get(config.task).targets
    classifier = targets == "classification"
    if calibrate and not classifier:  # refused before any work
        raise UsageError(
            f"--calibrate fits a temperature to a classifier's logits; task '{config.task}' "
            f"predicts {targets} (per-pixel calibration is not supported)"
        )
    run_dir = run_dir_of(path)
    split = scored_split(split, config, run_dir)
    recorded = None
    if run_dir:
        try:
            check_run_data(run_dir, config)
        except UsageError:
            # A folder that grew is still scored on the run's own validation files.
            recorded = _recorded_split(run_dir) if split == "val" else None
            if recorded is None:
                raise
    if calibrate and run_dir and not os.access(run_dir, os.W_OK | os.X_OK):
        raise UsageError(f"--calibrate: cannot write in '{run_dir}'; calibrate a copy of the run")
    evaluator = Evaluator(config, plugins, split, recorded)
    if recorded is not None:
        now = split_record(evaluator.prepared.data, Path(config.data)) or {"val": []}
        missing = sorted(set(recorded["val"]) - set(now["val"]))
        if missing:
            raise UsageError(
                f"'{config.data}' lost {len(missing)} of the validation files of "
                f"'{run_dir}' since the run (e.g. {missing[0]}); it cannot be scored as it was"
            )
    # A classifier's logits are N x C, small enough to keep for the calibration.
    kept: list[tuple[torch.Tensor, torch.Tensor]] = []
    keep = (lambda logits, y: kept.append((logits.cpu(), y.cpu()))) if classifier else None
    # hashed before reading: a run still writing `best` cannot swap the weights T is for
    digest = _sha256(weights_file(path)) if classifier else ""
    metrics = evaluator.score(read_state(path), path, tta, keep)
    result = {
        "checkpoint": path,
        "data": config.data,
        "split": split,
        "samples": len(evaluator.data.val),  # type: ignore[arg-type]
        "tta": tta,
        **metrics,
        **_class_figures(metrics, classifier),
        "class_names": evaluator.data.class_names,
    }
    notes: list[str] = []
    if recorded is not None:
        notes.append(
            f"'{config.data}' changed since the run; scored on the run's own "
            f"{len(recorded['val'])} validation files"
            + (
                f", not on the {len(evaluator.held_back)} added since"
                if evaluator.held_back
                else ""
            )
        )
    if kept:
        logits, target = torch.cat([k[0] for k in kept]), torch.cat([k[1] for k in kept])
        found = _temperature(path, digest, run_dir, logits, target, tta, calibrate, notes)
        result.update(found)
    if notes:
        result["notes"] = notes
    return result


def _class_figures(metrics: dict[str, Any], classifier: bool) -> dict[str, Any]:
    """Each class's support (images, or truth pixels) from the confusion matrix,
    and a classifier's precision and recall (its F1 is already there)."""
    matrix = metrics.get("val_confusion_matrix")
    if matrix is None:  # a plugin's task may keep no confusion matrix
        return {}
    cm = torch.tensor(matrix, dtype=torch.float64)
    tp, truth, predicted = cm.diagonal(), cm.sum(dim=1), cm.sum(dim=0)
    figures: dict[str, Any] = {}
    if classifier:
        figures["val_precision_per_class"] = (tp / predicted).tolist()  # 0/0: nan
        figures["val_recall_per_class"] = (tp / truth).tolist()
    figures["support"] = [int(n) for n in truth.tolist()]
    return figures


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _temperature(
    path: str,
    digest: str,
    run_dir: Path | None,
    logits: torch.Tensor,
    target: torch.Tensor,
    tta: str,
    calibrate: bool,
    notes: list[str],
) -> dict[str, Any]:
    """With ``calibrate``, T fitted now and stored with the run; otherwise the
    run's stored T when it was fitted on these weights with this ``--tta``.
    Its figures, or nothing when there is no T."""
    stored = run_dir / CALIBRATION if run_dir else None
    if calibrate:
        temperature = fit_temperature(logits, target)
        figures = calibrated(logits, target, temperature)
        problems = doubts(figures, temperature, logits.shape[1])
        if problems:
            notes += [f"warning: {p}; the temperature was not stored" for p in problems]
            extra: dict[str, Any] = {"calibration_refused": problems}
        else:
            _store(stored, path, digest, tta, temperature, figures, len(target), notes)
            extra = {"calibration_file": str(stored)} if stored else {}
    else:
        found = _stored_temperature(stored, digest, tta, notes)
        if found is None:
            return {}
        temperature, figures, extra = found, calibrated(logits, target, found), {}
    notes.append(
        "the temperature was fitted on this same validation split, "
        "so ece_calibrated is in-sample (optimistic)"
    )
    return {
        "temperature": temperature,
        "ece_calibrated": figures["ece_after"],
        "nll": figures["nll_before"],
        "nll_calibrated": figures["nll_after"],
        **extra,
    }


def _store(
    where: Path | None,
    path: str,
    digest: str,
    tta: str,
    temperature: float,
    figures: dict[str, float],
    samples: int,
    notes: list[str],
) -> None:
    if where is None:  # the figures are still worth having; T is in the output
        notes.append(f"'{path}' is not in a run directory: the temperature was not stored")
        return
    weights = weights_file(path)
    record = {
        "temperature": temperature,
        **figures,
        "samples": samples,
        "checkpoint": path,
        "weights": str(weights),
        "weights_sha256": digest,  # T belongs to these weights only
        "tta": tta,
        "fitted_on": "the validation split, the same split the ECE after is measured on",
    }
    text = json_text(record, indent=2) + "\n"

    def write(tmp: str) -> None:
        Path(tmp).write_text(text)

    atomic_write(where, write)  # a temporary file, then os.replace: never half a file


def _stored_temperature(
    stored: Path | None, digest: str, tta: str, notes: list[str]
) -> float | None:
    if stored is None or not stored.is_file():
        return None
    try:
        record = json.loads(stored.read_text())
        temperature = float(record["temperature"])
        if not 0 < temperature < math.inf:
            raise ValueError(f"temperature {temperature}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        notes.append(f"'{stored}' is unreadable ({exc}); no temperature applied")
        return None
    if record.get("weights_sha256") != digest:
        notes.append(f"'{stored}' was fitted on other weights; run --calibrate again")
        return None
    if record.get("tta") != tta:
        notes.append(f"'{stored}' was fitted with --tta {record.get('tta')}; not applied")
        return None
    return temperature


def per_class_table(result: dict[str, Any]) -> str:
    """A row per class: its name, every per-class figure and its support."""
    names = result.get("class_names") or []
    columns = {
        key[len("val_") : -len(PER_CLASS)]: result[key]
        for key in result
        if key.startswith("val_") and key.endswith(PER_CLASS)
    }
    if not names or not columns:
        return ""
    width = max(len("class"), *(len(n) for n in names))
    lines = ["  ".join([f"{'class':<{width}}", *(f"{c:>9}" for c in columns), "  support"])]
    for i, name in enumerate(names):
        cells = [_cell(values[i]) for values in columns.values()]
        support = result["support"][i] if "support" in result else "-"
        lines.append("  ".join([f"{name:<{width}}", *cells, f"{support:>9}"]))
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None or value != value:  # nan: the class is absent from truth and prediction
        return f"{'-':>9}"
    return f"{value:>9.4f}"


def plot_confusion(result: dict[str, Any], path: str) -> None:
    """The confusion matrix, rows the truth: counts in the cells, coloured by
    the share of their row (so a rare class reads as clearly as a common one)."""
    matrix = result.get("val_confusion_matrix")
    if matrix is None:
        raise UsageError("--plot: this task reports no confusion matrix")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = torch.tensor(matrix, dtype=torch.float64)
    share = (counts / counts.sum(dim=1, keepdim=True)).nan_to_num(0.0)  # an absent class: 0
    names = result["class_names"]
    n = len(names)
    side = max(4.0, 0.5 * n + 2)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    image = ax.imshow(share.numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of the true class")
    ax.set_xticks(range(n), names, rotation=45, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:  # beyond that the numbers no longer fit their cells
        for i in range(n):
            for j in range(n):
                colour = "white" if share[i, j] > 0.5 else "black"
                text = _count(int(counts[i, j]))
                ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=8)
    tta = " (TTA flip)" if result.get("tta") == "flip" else ""
    ax.set_title(f"{result['checkpoint']}{tta}: {result['samples']} samples", fontsize=9)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _count(n: int) -> str:
    """Pixel counts run to millions: keep each cell short."""
    if n < 10_000:
        return str(n)
    return f"{n / 1000:.0f}k" if n < 1_000_000 else f"{n / 1_000_000:.1f}M"
