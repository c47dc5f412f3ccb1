"""``ftkit eval``: the metrics of a checkpoint on a dataset's validation split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from ftkit.config import Config
from ftkit.engine.distributed import pick_device
from ftkit.engine.loop import Loop
from ftkit.engine.optim import make_optimizer
from ftkit.engine.resume import check_run_data
from ftkit.engine.run import make_loss
from ftkit.models.weights import fit_weights, read_state
from ftkit.plugins.manager import Plugins
from ftkit.prepare import model_data, prepare
from ftkit.tasks import TASKS


def evaluate_checkpoint(path: str, config: Config, plugins: Plugins) -> dict[str, Any]:
    for run_dir in (Path(path), Path(path).parent.parent):  # a run, or its weights file
        if (run_dir / "config.toml").is_file():
            check_run_data(run_dir, config)
            break
    prepared = prepare(config, plugins, load_weights=False)
    fit_weights(prepared.model, prepared.anatomy, read_state(path), source=path, exact=True)
    device = pick_device(config.device)
    data = model_data(prepared, plugins)
    loader = DataLoader(data.val, batch_size=config.batch_size, num_workers=config.workers)
    model = prepared.model.to(device)
    loop = Loop(model, make_optimizer("adamw", model), device, amp=config.amp)
    with torch.inference_mode():
        metrics, _ = loop.evaluate(
            loader, make_loss(prepared, data, plugins), TASKS[config.task], prepared.num_classes
        )
    return {
        "checkpoint": path,
        "samples": len(data.val),  # type: ignore[arg-type]
        **metrics,
        "class_names": data.class_names,
    }
