"""Scoring weights on a dataset's validation split: ``ftkit eval`` (one
checkpoint), ``ftkit interpolate`` and ``ftkit soup`` (many mixes of weights,
engine/weight_space.py) share one ``Evaluator``, built once per command."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader

from ftkit.config import Config, run_dir_of
from ftkit.engine.distributed import pick_device
from ftkit.engine.loop import evaluate
from ftkit.engine.loss import make_loss
from ftkit.engine.resume import check_run_data
from ftkit.models.weights import fit_weights, read_state
from ftkit.plugins.manager import Plugins
from ftkit.prepare import model_data, prepare


class Evaluator:
    """A model of ``config``'s architecture, the validation data and the loss:
    ``score(state)`` gives the validation metrics of those weights."""

    def __init__(self, config: Config, plugins: Plugins) -> None:
        self.prepared = prepare(config, plugins, load_weights=False)
        self.device = pick_device(config.device)
        self.data = model_data(self.prepared)
        self.loader = DataLoader(
            self.data.val, batch_size=config.batch_size, num_workers=config.workers
        )
        self.task = plugins.tasks.get(config.task)
        self.monitor = config.monitor or self.task.monitor
        self.loss_fn, _ = make_loss(self.prepared, self.data, plugins)  # training's line
        self.amp = config.amp

    def score(self, state: dict[str, torch.Tensor], source: str) -> dict[str, Any]:
        model = self.prepared.model
        fit_weights(model, self.prepared.anatomy, state, source=source, exact=True)
        model.to(self.device)
        with torch.inference_mode():
            metrics, _ = evaluate(
                model, self.loader, self.loss_fn, self.task, self.prepared.num_classes,
                self.device, amp=self.amp,
            )  # fmt: skip
        return metrics


def evaluate_checkpoint(path: str, config: Config, plugins: Plugins) -> dict[str, Any]:
    run_dir = run_dir_of(path)
    if run_dir:
        check_run_data(run_dir, config)
    evaluator = Evaluator(config, plugins)
    metrics = evaluator.score(read_state(path), path)
    return {
        "checkpoint": path,
        "samples": len(evaluator.data.val),  # type: ignore[arg-type]
        **metrics,
        "class_names": evaluator.data.class_names,
    }
