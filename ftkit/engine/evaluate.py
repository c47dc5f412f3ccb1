"""``ftkit eval``: the metrics of a checkpoint on a dataset's validation split."""

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


def evaluate_checkpoint(path: str, config: Config, plugins: Plugins) -> dict[str, Any]:
    run_dir = run_dir_of(path)
    if run_dir:
        check_run_data(run_dir, config)
    prepared = prepare(config, plugins, load_weights=False)
    fit_weights(prepared.model, prepared.anatomy, read_state(path), source=path, exact=True)
    device = pick_device(config.device)
    data = model_data(prepared)
    loader = DataLoader(data.val, batch_size=config.batch_size, num_workers=config.workers)
    model = prepared.model.to(device)
    task = plugins.tasks.get(config.task)
    loss_fn, _ = make_loss(prepared, data, plugins)  # its class-weights line is training's
    with torch.inference_mode():
        metrics, _ = evaluate(
            model, loader, loss_fn, task, prepared.num_classes, device, amp=config.amp
        )
    return {
        "checkpoint": path,
        "samples": len(data.val),  # type: ignore[arg-type]
        **metrics,
        "class_names": data.class_names,
    }
