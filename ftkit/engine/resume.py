"""``ftkit run --resume RUN_DIR``: checks before continuing a run.

A finished run is left alone. Options that change the training (model,
classes, strategy, loss, batch size, data, ...) must match the run's own
``config.toml``; options that don't (device, workers) may change.
"""

from __future__ import annotations

import json
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from ftkit.config import Config, build_config, read_run_config
from ftkit.engine import checkpoint as ckpt
from ftkit.errors import UsageError


def run_config(run_dir: str) -> dict[str, Any]:
    """The saved options of a run, as a config file's values."""
    path = Path(run_dir)
    if not (path / "config.toml").is_file() or not (path / "checkpoints" / ckpt.LAST).is_file():
        raise UsageError(
            f"--resume '{run_dir}' is not an ftkit run with a checkpoint "
            f"(expected config.toml and checkpoints/{ckpt.LAST})"
        )
    return read_run_config(path)


def open_resume(run_dir: str, config: Config) -> tuple[Path, Config, dict[str, Any]] | None:
    path = Path(run_dir)
    saved_config = build_config(run_config(run_dir), {}, {}, ())
    summary = path / "summary.json"
    if summary.is_file():
        reason = json.loads(summary.read_text()).get("stop_reason", "finished")
        print(f"{run_dir} already finished ({reason}); nothing to resume", flush=True)
        return None
    changed = [
        f"{f.name}: {getattr(saved_config, f.name)!r} -> {getattr(config, f.name)!r}"
        for f in fields(Config)
        if f.metadata.get("trains", True)
        and f.name != "plugins"
        and getattr(saved_config, f.name) != getattr(config, f.name)
    ]
    if changed:
        raise UsageError(
            f"--resume '{run_dir}': these options would change the training: {'; '.join(changed)}"
        )
    state = ckpt.load_state(path / "checkpoints" / ckpt.LAST)
    if state.get("threads") != torch.get_num_threads():
        print(
            f"ftkit: warning: the run used {state.get('threads')} threads, this process "
            f"{torch.get_num_threads()}: results may differ in the last bits",
            file=sys.stderr,
            flush=True,
        )
    return path, config, state
