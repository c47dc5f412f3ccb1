"""``ftkit run --resume RUN_DIR``: checks before continuing a run.

A finished run is left alone. Options that change the training (model,
classes, strategy, loss, batch size, data, ...) must match the run's own
``config.toml``; options that don't (device, workers) may change. A data
folder whose files changed since the run is refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

import ftkit.checkpoint as ckpt
from ftkit.config import DATA_FINGERPRINT, Config, build_config, read_run_config
from ftkit.data.load import check_fingerprint
from ftkit.engine.console import Console
from ftkit.engine.rundir import lock
from ftkit.errors import UsageError
from ftkit.plan.options import Option


def run_config(run_dir: str) -> dict[str, Any]:
    """The saved options of a run, as a config file's values."""
    path = Path(run_dir)
    if not (path / "config.toml").is_file() or not (path / "checkpoints" / ckpt.LAST).is_file():
        raise UsageError(
            f"--resume '{run_dir}' is not an ftkit run with a checkpoint "
            f"(expected config.toml and checkpoints/{ckpt.LAST})"
        )
    return read_run_config(path)


def check_run_data(run_dir: Path, config: Config) -> None:
    """Refuse the run's own data folder when its files changed since the run
    (a run directory records their fingerprint); other data is the user's choice."""
    saved = read_run_config(run_dir)
    recorded = saved.get(DATA_FINGERPRINT)
    if isinstance(recorded, str) and saved.get("data") == config.data:
        check_fingerprint(config.data, recorded, str(run_dir))


def _effective(config: Config, name: str) -> Any:
    """An option's value as the run uses it: the default model, not None."""
    return config.model_spec if name == "model" else getattr(config, name)


def open_resume(
    run_dir: str,
    config: Config,
    console: Console = Console(),
    plugin_options: Iterable[Option] = (),
) -> tuple[Path, dict[str, Any]] | None:
    """The run directory and its ``last.pt``; None when the run already finished.
    ``plugin_options``: the loaded plugins' options, read back from the run too."""
    path = Path(run_dir)
    finished = (path / "summary.json").is_file()  # read, never written: no lock
    if console.main and (path / "config.toml").is_file() and not finished:
        lock.acquire(path)  # before anything is read: a run may be writing it now
    saved_config = build_config(run_config(run_dir), {}, {}, (), plugin_options=plugin_options)
    summary = path / "summary.json"
    if summary.is_file():
        reason = json.loads(summary.read_text()).get("stop_reason", "finished")
        console.say(f"{run_dir} already finished ({reason}); nothing to resume")
        return None
    changed = [
        f"{f.name}: {_effective(saved_config, f.name)!r} -> {_effective(config, f.name)!r}"
        for f in fields(Config)
        if f.metadata.get("trains", True)
        and f.name not in ("plugins", "plugin_options")
        and _effective(saved_config, f.name) != _effective(config, f.name)
    ]
    saved_own, own = saved_config.plugin_options, config.plugin_options
    changed += [  # a plugin's options may change what it trains on: all must match
        f"{name}: {saved_own.get(name)!r} -> {own.get(name)!r}"
        for name in sorted({*saved_own, *own})
        if saved_own.get(name) != own.get(name)
    ]
    if changed:
        raise UsageError(
            f"--resume '{run_dir}': these options would change the training: {'; '.join(changed)}"
        )
    check_run_data(path, config)
    state = ckpt.load_state(path / "checkpoints" / ckpt.LAST)
    if state.get("threads") != torch.get_num_threads():
        console.warn(
            f"the run used {state.get('threads')} threads, this process "
            f"{torch.get_num_threads()}: results may differ in the last bits"
        )
    return path, state
