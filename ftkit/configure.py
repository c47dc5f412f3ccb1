"""One ``Config`` from its sources: a ``--config`` file, the command line (or
the Python API's keywords), ``-o`` strategy options, and what a ``--from``
run's own ``config.toml`` decides. The CLI and ``ftkit.api`` both come here,
so both validate the same way."""

from __future__ import annotations

import os
from typing import Any

from ftkit.config import FOLLOWED, Config, build_config, load_file, read_run_config, run_dir_of
from ftkit.data.load import is_folder
from ftkit.errors import UsageError
from ftkit.plan.options import parse_assignments


def make_config(
    config_file: str | None,
    assignments: tuple[str, ...],
    plugin_modules: tuple[str, ...],
    values: dict[str, Any],
) -> Config:
    file_values = load_file(config_file) if config_file else {}
    if "start_from" in values:  # a command that takes --from: run, plan, lr-find
        file_values = follow_baseline(file_values, values)
    return build_config(
        file_values,
        values,
        parse_assignments(assignments),
        plugin_modules,
        where=config_file or "command line",
    )


def follow_baseline(file_values: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """``file_values`` completed by the ``--from`` run's own ``config.toml``: each of
    ``FOLLOWED`` not given here (a given one that differs is a plan warning, see
    ``ftkit.prepare.baseline_differences``). A different ``--val-fraction`` on the
    same folder is refused: it would move baseline training images into validation."""
    start = values.get("start_from") or file_values.get("from") or file_values.get("start_from")
    run_dir = run_dir_of(start) if start else None
    if run_dir is None:
        return file_values
    saved = read_run_config(run_dir)
    merged = dict(file_values)
    for key in FOLLOWED:
        if key in saved and values.get(key) is None and key not in file_values:
            merged[key] = saved[key]

    def effective(key: str) -> Any:
        return values[key] if values.get(key) is not None else merged.get(key)

    data = effective("data")
    data = os.path.abspath(data) if isinstance(data, str) and is_folder(data) else data
    fraction = effective("val_fraction")
    if data == saved.get("data") and "val_fraction" in saved and fraction != saved["val_fraction"]:
        raise UsageError(
            f"--val-fraction {fraction} differs from the --from run's "
            f"{saved['val_fraction']} on the same data: its training images would be "
            f"scored as validation; keep {saved['val_fraction']}"
        )
    return merged
